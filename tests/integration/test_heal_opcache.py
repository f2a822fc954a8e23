"""Healing stale OPcache in a real php-fpm8.2 pool with validate_timestamps=0: FPM serves the new code."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.collectors.opcache import OPCACHE_SCRIPTS_OUTSIDE_RELEASE, OPCACHE_SCRIPTS_STALE
from exporter.config import Config, parse
from exporter.heal.routes import HEAL_RUNNER
from exporter.scheduler import Status
from tests.support import phpfpm
from tests.support.healing import AUTH, alert, payload, token_file
from tests.support.phpfpm import FpmFactory
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
LONG_AGO = time.time() - 3600  # older than file_update_protection, so OPcache caches the file


async def test_stale_opcache_alert_is_healed_and_fpm_serves_the_new_code(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 0})
    page = fpm.script("page.php", "<?php echo 'old';", mtime=LONG_AGO)
    assert (await fpm.get("page.php")).body == b"old"
    config = parse({
        "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                     "pool_config": str(fpm.pool_config)}],
        "heal": {"token_file": str(token_file(tmp_path))},
    })
    client = await aiohttp_client(create_app(config, run_collectors=False))
    runner = client.server.app[HEAL_RUNNER]  # type: ignore[index]
    await runner.scheduler.collect("opcache", "www")  # sees the old version cached
    changed_at = math.floor(time.time()) + 1
    page.write_text("<?php echo 'new';")
    os.utime(page, (changed_at, changed_at))
    assert (await fpm.get("page.php")).body == b"old"

    async def stale() -> Status | None:
        st = await runner.scheduler.collect("opcache", "www")
        ok = st.observation is not None and st.observation.samples.value(OPCACHE_SCRIPTS_STALE) == 1
        return st if ok else None

    await async_wait_for(stale, timeout=10, message="page.php reported stale")

    body = json.dumps(payload(alert("CachewardenOpcacheStaleScripts", "www")))
    resp = await client.post("/heal", data=body, headers={"Content-Type": "application/json", **AUTH})
    decision = (await resp.json())["decisions"][0]
    assert decision["decision"] == "started"
    await runner.wait_idle()

    run = runner.run(decision["run_id"])
    assert run is not None
    assert run.result == "verified", run.as_dict()
    assert run.records[0].action == "opcache.invalidate"
    assert run.records[0].outcome is not None
    assert run.records[0].outcome.done == [f"invalidated {page}"]
    assert (await fpm.get("page.php")).body == b"new"


async def switched_release(php_fpm: FpmFactory, tmp_path: Path) -> tuple[phpfpm.Fpm, Path]:
    """A pool (validate_timestamps=0, a realpath cache that outlives the test) serving release 1
    through `current`, which a deploy has just switched to release 2. Returns the pool and `current`."""
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 0, "realpath_cache_ttl": 3600})
    releases = tmp_path / "app" / "releases"
    for n in ("1", "2"):
        (releases / n).mkdir(parents=True)
        page = releases / n / "page.php"
        page.write_text(f"<?php echo '{n}';")
        os.utime(page, (LONG_AGO, LONG_AGO))
    current = tmp_path / "app" / "current"
    current.symlink_to(releases / "1")
    # As a web server passes it: SCRIPT_FILENAME through the symlink, never resolved.
    fpm.script("index.php", f"<?php include '{current / 'page.php'}';", mtime=LONG_AGO)
    assert {(await fpm.get("index.php")).body for _ in range(8)} == {b"1"}  # every worker has it
    current.unlink()
    current.symlink_to(releases / "2")
    assert {(await fpm.get("index.php")).body for _ in range(8)} == {b"1"}  # the incident
    return fpm, current


def release_config(fpm: phpfpm.Fpm, current: Path, tmp_path: Path) -> Config:
    return parse({
        "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                     "release_symlink": str(current)}],
        "heal": {"token_file": str(token_file(tmp_path))},
    })


async def test_a_pool_serving_a_superseded_release_is_healed_by_its_alert_and_serves_the_new_one(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    fpm, current = await switched_release(php_fpm, tmp_path)
    client = await aiohttp_client(create_app(release_config(fpm, current, tmp_path), run_collectors=False))
    runner = client.server.app[HEAL_RUNNER]  # type: ignore[index]
    before = await runner.scheduler.collect("opcache", "www")
    assert before.observation is not None
    assert before.observation.samples.value(OPCACHE_SCRIPTS_OUTSIDE_RELEASE) == 1

    body = json.dumps(payload(alert("CachewardenOpcacheOutsideRelease", "www")))
    resp = await client.post("/heal", data=body, headers={"Content-Type": "application/json", **AUTH})
    decision = (await resp.json())["decisions"][0]
    assert decision["decision"] == "started"
    await runner.wait_idle()

    run = runner.run(decision["run_id"])
    assert run is not None
    assert run.result == "verified", run.as_dict()
    assert [r.action for r in run.records] == ["opcache.reset"]
    # What verified it holds once every worker has served again: none resolves `current` to release 1
    # from its realpath cache, so none caches release 1 again.
    assert {(await fpm.get("index.php")).body for _ in range(8)} == {b"2"}
    after = await runner.scheduler.collect("opcache", "www")
    assert after.observation is not None
    assert after.observation.samples.value(OPCACHE_SCRIPTS_OUTSIDE_RELEASE) == 0


@pytest.mark.parametrize("action", ["opcache.invalidate", "opcache.reset", "opcache.purge_file_cache"])
async def test_a_manual_opcache_action_on_a_superseded_release_is_never_already_healthy(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient, action: str) -> None:
    fpm, current = await switched_release(php_fpm, tmp_path)
    client = await aiohttp_client(create_app(release_config(fpm, current, tmp_path), run_collectors=False))

    resp = await client.post(f"/heal?action={action}&target=www", headers=AUTH)

    run = (await resp.json())["run"]
    assert run["result"] != "already_healthy", run
    if action == "opcache.reset":
        assert (resp.status, run["result"]) == (200, "verified")
        assert {(await fpm.get("index.php")).body for _ in range(8)} == {b"2"}
    elif action == "opcache.invalidate":
        # The old script would no longer be served, but OPcache lists it until a reset, so an
        # invalidation could never be verified: nothing is run, and the note names what is left.
        assert (resp.status, run["result"]) == (422, "not_clearable"), run
        assert "cachewarden_opcache_scripts_outside_release" in run["note"]
    else:
        # No file cache here: a purge changes nothing for scripts in shared memory, and says so.
        assert (resp.status, run["result"]) == (422, "unverified"), run


async def test_a_manual_invalidation_is_verified_on_a_pool_that_gets_no_request_after_it(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    # opcache_invalidate leaves the entry listed (corrupted) until a request compiles the script again:
    # counted as stale, the run ended "unverified" on a host with no traffic.
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 0})
    page = fpm.script("page.php", "<?php echo 'old';", mtime=LONG_AGO)
    assert (await fpm.get("page.php")).body == b"old"
    config = parse({
        "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                     "pool_config": str(fpm.pool_config)}],
        "heal": {"token_file": str(token_file(tmp_path))},
    })
    client = await aiohttp_client(create_app(config, run_collectors=False))
    runner = client.server.app[HEAL_RUNNER]  # type: ignore[index]
    await runner.scheduler.collect("opcache", "www")
    changed_at = math.floor(time.time()) + 1
    page.write_text("<?php echo 'new';")
    os.utime(page, (changed_at, changed_at))

    async def stale() -> Status | None:
        st = await runner.scheduler.collect("opcache", "www")
        ok = st.observation is not None and st.observation.samples.value(OPCACHE_SCRIPTS_STALE) == 1
        return st if ok else None

    await async_wait_for(stale, timeout=10, message="page.php reported stale")

    resp = await client.post("/heal?action=opcache.invalidate&target=www", headers=AUTH)

    body = await resp.json()
    assert resp.status == 200, body
    assert body["result"] == "verified"
    assert [s["action"] for s in body["run"]["step_results"]] == ["opcache.invalidate"]
    after = await runner.scheduler.collect("opcache", "www")
    assert after.observation is not None
    assert after.observation.samples.value(OPCACHE_SCRIPTS_STALE) == 0  # and stays so with no request
    assert (await fpm.get("page.php")).body == b"new"
    served = await runner.scheduler.collect("opcache", "www")
    assert served.observation is not None
    assert served.observation.samples.value(OPCACHE_SCRIPTS_STALE) == 0  # the new compile is fresh
