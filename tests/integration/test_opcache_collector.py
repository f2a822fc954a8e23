"""The opcache collector against real php-fpm8.2 with OPcache: the deploy-drift incident end to end,
directive attribution, states where OPcache cannot be read, and the agent's own safety."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.collectors import build_collectors
from exporter.collectors.base import Observation, Verdict
from exporter.collectors.opcache import (
    CODE_REVISION_DRIFT,
    OPCACHE_API_RESTRICTED,
    OPCACHE_DRIFT_EXACT,
    OPCACHE_DRIFT_SECONDS,
    OPCACHE_ENABLED,
    OPCACHE_SCRIPTS_MISSING,
    OPCACHE_SCRIPTS_STALE,
    OPCACHE_SETTING_INFO,
    OPCACHE_STATUS_AVAILABLE,
    OPCACHE_VALIDATE_TIMESTAMPS,
    OpcacheCollector,
)
from exporter.config import parse
from exporter.php import agent as agent_module
from exporter.php.agent import AgentError
from exporter.php.fastcgi import FastCGIConnectError
from tests.support import phpfpm
from tests.support.phpfpm import Fpm, FpmFactory
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

LONG_AGO = time.time() - 3600  # older than file_update_protection, so OPcache caches the file


def opcache_collector(fpm: Fpm, **extra: Any) -> OpcacheCollector:
    config = parse({"php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                                 "pool_config": str(fpm.pool_config), **extra}]})
    collector = build_collectors(config, {"fpm": False})[0]
    assert isinstance(collector, OpcacheCollector)
    return collector


def check(obs: Observation, name: str) -> Any:
    return next(c for c in obs.checks if c.name == name)


def source_of(obs: Observation, directive: str) -> tuple[str, str]:
    for spec, labels, _ in obs.samples.values:
        if spec is OPCACHE_SETTING_INFO and labels[1] == directive:
            return labels[2], labels[3]
    raise AssertionError(f"no setting_info for {directive}")


async def test_code_changed_under_validate_timestamps_0_is_stale_until_reset(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 0},
                  conf_d={"99-opcache.ini": "opcache.validate_timestamps=0\n"})
    page = fpm.script("page.php", "<?php echo 'old';", mtime=LONG_AGO)
    assert (await fpm.get("page.php")).body == b"old"
    collector = opcache_collector(fpm)
    first = await collector.collect()
    assert first.samples.value(OPCACHE_SCRIPTS_STALE) == 0
    assert first.samples.value(OPCACHE_VALIDATE_TIMESTAMPS) == 0
    first_seen = math.floor(time.time())

    # The deploy: new code on disk, with an mtime after cachewarden saw the old one cached.
    page.write_text("<?php echo 'new';")
    changed_at = first_seen + 1
    os.utime(page, (changed_at, changed_at))
    assert (await fpm.get("page.php")).body == b"old"  # FPM keeps serving the cached old bytecode

    async def stale_with_age() -> Observation | None:
        obs = await collector.collect()
        age = obs.samples.value(OPCACHE_DRIFT_SECONDS) or 0
        return obs if obs.samples.value(OPCACHE_SCRIPTS_STALE) == 1 and age > 0 else None

    obs = await async_wait_for(stale_with_age, timeout=10, message="page.php reported stale with an age")
    assert obs.samples.value(OPCACHE_DRIFT_EXACT) == 0
    assert obs.details["stale"] == [str(page)]
    stale = check(obs, "opcache.stale")
    assert stale.verdict is Verdict.PROBLEM
    assert stale.items == (str(page),)
    source = fpm.conf_d / "99-opcache.ini"
    consequence = f"code changed on disk is not being served: validate_timestamps=0 set by {source}"
    assert stale.summary.endswith(consequence)

    await collector.agent.run("reset")

    async def serves_new() -> bool:
        return (await fpm.get("page.php")).body == b"new"

    await async_wait_for(serves_new, message="FPM serving the new code after opcache_reset")
    after = await collector.collect()
    assert after.samples.value(OPCACHE_SCRIPTS_STALE) == 0
    assert after.samples.value(OPCACHE_DRIFT_SECONDS) == 0
    assert check(after, "opcache.stale").verdict is Verdict.OK


async def test_the_later_conf_d_file_is_named_as_the_source(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(conf_d={"99-disable-opcache-temp.ini": "opcache.validate_timestamps=1\n",
                          "99-opcache-optimization.ini": "opcache.validate_timestamps=0\n"},
                  pool={"php_admin_value[opcache.revalidate_freq]": 30})
    obs = await opcache_collector(fpm).collect()
    assert source_of(obs, "validate_timestamps") == ("0", str(fpm.conf_d / "99-opcache-optimization.ini"))
    assert source_of(obs, "revalidate_freq") == ("30", str(fpm.pool_config))
    assert source_of(obs, "memory_consumption") == ("64", str(fpm.conf_d / "10-opcache.ini"))
    assert source_of(obs, "file_update_protection") == ("2", "default")


async def test_exact_drift_with_validate_timestamps_1(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 1, "opcache.revalidate_freq": 3600})
    page = fpm.script("page.php", "<?php echo 'old';", mtime=LONG_AGO)
    await fpm.get("page.php")
    page.write_text("<?php echo 'new';")
    os.utime(page, (LONG_AGO + 60, LONG_AGO + 60))
    assert (await fpm.get("page.php")).body == b"old"  # not rechecked for an hour
    obs = await opcache_collector(fpm).collect()
    assert obs.samples.value(OPCACHE_DRIFT_EXACT) == 1
    assert obs.details["stale"] == [str(page)]
    assert (obs.samples.value(OPCACHE_DRIFT_SECONDS) or 0) > 3000


async def test_deleted_source_is_missing(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 0})
    gone = fpm.script("gone.php", "<?php echo 'x';", mtime=LONG_AGO)
    await fpm.get("gone.php")
    gone.unlink()
    obs = await opcache_collector(fpm).collect()
    assert obs.samples.value(OPCACHE_SCRIPTS_MISSING) == 1
    assert check(obs, "opcache.missing").items == (str(gone),)


async def test_restrict_api_is_a_reported_state(php_fpm: FpmFactory, tmp_path: Path) -> None:
    fpm = php_fpm(opcache={"opcache.restrict_api": str(tmp_path / "elsewhere")})
    obs = await opcache_collector(fpm).collect()
    assert obs.samples.value(OPCACHE_API_RESTRICTED) == 1
    assert obs.samples.value(OPCACHE_STATUS_AVAILABLE) == 0
    status = check(obs, "opcache.status")
    assert status.verdict is Verdict.NOTE
    assert "restrict_api" in status.summary


async def test_disabled_opcache_is_a_reported_state(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(opcache={"opcache.enable": 0})
    obs = await opcache_collector(fpm).collect()
    assert obs.samples.value(OPCACHE_ENABLED) == 0
    assert check(obs, "opcache.status").verdict is Verdict.NOTE
    assert obs.samples.value(OPCACHE_SCRIPTS_STALE) is None


async def test_revision_fpm_runs_versus_disk(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 0})
    rev = fpm.script("revision.php", "<?php return 'v1';", mtime=LONG_AGO)
    collector = opcache_collector(fpm, revision_file=str(rev))
    first = await collector.collect()
    assert first.samples.value(CODE_REVISION_DRIFT) == 0
    rev.write_text("<?php return 'v2';")
    second = await collector.collect()
    assert second.samples.value(CODE_REVISION_DRIFT) == 1
    assert "runs revision v1 but" in check(second, "code.revision").summary


async def test_agent_refuses_without_token_and_leaves_no_script(php_fpm: FpmFactory) -> None:
    fpm = php_fpm()
    # A copy the web server could reach by URL does nothing without the run's token.
    script = fpm.docroot / "cachewarden-probe.php"
    script.write_text(agent_module.compose_script("reset", "the-real-token"))
    resp = await fpm.get(script.name)
    assert resp.status == 403
    assert b"missing or wrong token" in resp.body
    script.unlink()

    collector = opcache_collector(fpm)
    await collector.collect()
    assert list(fpm.agent_dir.iterdir()) == []
    fpm.stop()
    with pytest.raises(FastCGIConnectError, match="cannot connect"):
        await collector.collect()
    assert list(fpm.agent_dir.iterdir()) == []  # removed even when the run failed


async def test_agent_failure_is_an_agent_error(php_fpm: FpmFactory) -> None:
    fpm = php_fpm()
    collector = opcache_collector(fpm)
    with pytest.raises(AgentError, match="revision file not found"):
        await collector.agent.run("revision", {"path": "/nonexistent/revision.php"})
