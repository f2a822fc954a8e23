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
from exporter.collectors.opcache import OPCACHE_SCRIPTS_STALE
from exporter.config import parse
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
