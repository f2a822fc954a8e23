"""The opcache collector against real php-fpm8.2 with OPcache: the deploy-drift incident end to end,
directive attribution, states where OPcache cannot be read, and the agent's own safety."""

from __future__ import annotations

import asyncio
import contextlib
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
    OPCACHE_CACHED_SCRIPTS,
    OPCACHE_DRIFT_EXACT,
    OPCACHE_DRIFT_SECONDS,
    OPCACHE_ENABLED,
    OPCACHE_SCRIPTS_MISSING,
    OPCACHE_SCRIPTS_OUTSIDE_RELEASE,
    OPCACHE_SCRIPTS_STALE,
    OPCACHE_SCRIPTS_SUSPECT,
    OPCACHE_SETTING_INFO,
    OPCACHE_STATUS_AVAILABLE,
    OPCACHE_VALIDATE_TIMESTAMPS,
    OpcacheCollector,
)
from exporter.config import parse
from exporter.php import agent as agent_module
from exporter.php.agent import AgentError
from exporter.php.fastcgi import FastCGIConnectError, FastCGIError, FastCGITimeout
from exporter.php.ini import UNKNOWN_SOURCE
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
    first_seen = math.ceil(time.time())

    # The deploy: new code on disk whose mtime lies after cachewarden saw the old one cached, and in the
    # past by more than file_update_protection (2 s), as for any deploy OPcache would pick up at once
    # if it checked timestamps. The clock must first get that far past the first sighting.
    protection = 2

    async def clock_past_first_sighting() -> bool:
        return time.time() > first_seen + protection + 1

    await async_wait_for(clock_past_first_sighting, message="clock past the first sighting")
    page.write_text("<?php echo 'new';")
    changed_at = math.floor(time.time()) - protection - 1
    assert changed_at >= first_seen
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


async def test_one_fresh_look_at_an_in_place_deploy_is_a_problem(php_fpm: FpmFactory) -> None:
    # `cachewarden check` collects once: a deploy after OPcache started can only be suspect, and with
    # validate_timestamps=0 that is the incident. An in-place copy keeping old mtimes (rsync -a, tar x,
    # cp -p) is seen through the ctime.
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 0},
                  conf_d={"99-opcache.ini": "opcache.validate_timestamps=0\n"})
    started_second = math.floor(time.time())

    async def next_second() -> bool:  # file times are whole seconds: the deploy must fall after the start
        return time.time() >= started_second + 1

    await async_wait_for(next_second, message="clock past OPcache's start second")
    page = fpm.script("page.php", "<?php echo 'old';", mtime=LONG_AGO)
    untouched = fpm.script("untouched.php", "<?php echo 'same';", mtime=LONG_AGO)
    assert (await fpm.get("page.php")).body == b"old"
    page.write_text("<?php echo 'new';")
    os.utime(page, (LONG_AGO, LONG_AGO))  # the deploy kept the release's old mtime
    assert (await fpm.get("page.php")).body == b"old"

    obs = await opcache_collector(fpm).collect()
    assert obs.samples.value(OPCACHE_SCRIPTS_SUSPECT) == 1
    assert obs.samples.value(OPCACHE_SCRIPTS_STALE) == 0
    assert obs.details["suspect"] == [str(page)]
    assert str(untouched) not in obs.details["suspect"]  # never requested, so never cached
    suspect = check(obs, "opcache.suspect")
    assert suspect.verdict is Verdict.PROBLEM
    assert suspect.items == (str(page),)
    assert "changed on disk after OPcache (re)started at " in suspect.summary
    source = fpm.conf_d / "99-opcache.ini"
    assert suspect.summary.endswith(
        f"code changed on disk may not be served: validate_timestamps=0 set by {source}; "
        "opcache.reset (cachewarden heal opcache.reset --target www) to be sure")


async def test_a_plain_revision_file_shows_the_cached_revision(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 0})
    rev = fpm.script("REVISION", "v1\nbuilt by ci\n", mtime=LONG_AGO)
    collector = opcache_collector(fpm, revision_file=str(rev))
    first = await collector.collect()
    assert first.samples.value(CODE_REVISION_DRIFT) == 0
    assert check(first, "code.revision").summary == "FPM runs revision v1, the one on disk"
    rev.write_text("v2\n")
    past = time.time() - 10  # older than file_update_protection: not what keeps v1 served
    os.utime(rev, (past, past))
    second = await collector.collect()
    assert second.samples.value(CODE_REVISION_DRIFT) == 1
    assert "runs revision v1 but" in check(second, "code.revision").summary


async def test_a_revision_run_that_fails_keeps_the_status_part(php_fpm: FpmFactory) -> None:
    fpm = php_fpm()
    # A revision file so slow that its run times out: a FastCGI error, not an agent answer.
    rev = fpm.script("revision.php", "<?php usleep(1500000); return 'v1';", mtime=LONG_AGO)
    obs = await opcache_collector(fpm, revision_file=str(rev), agent_timeout="500ms").collect()
    assert obs.samples.value(OPCACHE_ENABLED) == 1
    assert obs.samples.value(CODE_REVISION_DRIFT) == 0
    assert check(obs, "code.revision").summary == "revision unknown (running unknown, disk v1)"


async def test_a_pool_setting_without_pool_config_is_not_pinned_on_an_ini_file(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(conf_d={"99-opcache.ini": "opcache.validate_timestamps=1\n"},
                  pool={"php_admin_value[opcache.validate_timestamps]": 0})
    config = parse({"php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir)}]})
    without = build_collectors(config, {"fpm": False})[0]
    assert source_of(await without.collect(), "validate_timestamps") == ("0", UNKNOWN_SOURCE)
    with_pool = await opcache_collector(fpm).collect()
    assert source_of(with_pool, "validate_timestamps") == ("0", str(fpm.pool_config))


async def test_the_pool_section_is_the_one_that_answered(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(pool={"php_admin_value[opcache.revalidate_freq]": 30})
    # pool_config names two pools and the target is called neither: the agent says which one it runs in.
    two_pools = fpm.root / "pools.conf"
    two_pools.write_text("[other]\nphp_admin_value[opcache.revalidate_freq] = 99\n\n"
                         + fpm.pool_config.read_text().split("\n\n", 1)[1])
    obs = await opcache_collector(fpm, pool_config=str(two_pools)).collect()
    assert source_of(obs, "revalidate_freq") == ("30", str(two_pools))
    assert all(c.name != "opcache.pool_config" for c in obs.checks)


async def test_scripts_of_a_superseded_release_are_counted(php_fpm: FpmFactory, tmp_path: Path) -> None:
    fpm = php_fpm()
    releases = tmp_path / "app" / "releases"
    for n in ("1", "2"):
        (releases / n).mkdir(parents=True)
        page = releases / n / "page.php"
        page.write_text(f"<?php echo '{n}';")
        os.utime(page, (LONG_AGO, LONG_AGO))
    current = tmp_path / "app" / "current"
    current.symlink_to(releases / "1")
    fpm.script("load.php", f"<?php include '{releases / '1' / 'page.php'}';", mtime=LONG_AGO)
    assert (await fpm.get("load.php")).body == b"1"
    first = await opcache_collector(fpm, release_symlink=str(current)).collect()
    assert first.samples.value(OPCACHE_SCRIPTS_OUTSIDE_RELEASE) == 0
    current.unlink()
    current.symlink_to(releases / "2")  # the deploy switched the symlink; FPM still holds release 1
    obs = await opcache_collector(fpm, release_symlink=str(current)).collect()
    assert obs.samples.value(OPCACHE_SCRIPTS_OUTSIDE_RELEASE) == 1
    assert check(obs, "opcache.outside_release").items == (str(releases / "1" / "page.php"),)


async def test_file_update_protection_0_caches_every_agent_run_unless_blacklisted(
    php_fpm: FpmFactory,
) -> None:
    fpm = php_fpm(opcache={"opcache.file_update_protection": 0})
    collector = opcache_collector(fpm)
    first = await collector.collect()
    second = await collector.collect()
    assert (second.samples.value(OPCACHE_CACHED_SCRIPTS) or 0) > (first.samples.value(OPCACHE_CACHED_SCRIPTS)
                                                                   or 0)
    cached = check(second, "opcache.agent_cached")
    assert cached.verdict is Verdict.PROBLEM
    assert f"add {fpm.agent_dir} to the file named by opcache.blacklist_filename" in cached.summary

    blacklist = fpm.root / "opcache-blacklist.txt"
    blacklist.write_text(f"{fpm.agent_dir}/\n")
    blacklisted = php_fpm("blacklisted", opcache={"opcache.file_update_protection": 0,
                                                  "opcache.blacklist_filename": str(blacklist)})
    collector = opcache_collector(blacklisted)
    collector.agent.agent_dir = fpm.agent_dir
    first = await collector.collect()
    second = await collector.collect()
    assert second.samples.value(OPCACHE_CACHED_SCRIPTS) == first.samples.value(OPCACHE_CACHED_SCRIPTS)
    assert check(second, "opcache.agent_cached").verdict is Verdict.OK


async def test_a_blacklist_hidden_by_restrict_api_is_unknown_not_a_problem(php_fpm: FpmFactory,
                                                                           tmp_path: Path) -> None:
    # Blacklisted, `check` is clean; opcache.restrict_api then hides opcache_get_configuration(),
    # which says nothing about the blacklist: a NOTE, not "add agent_dir to the blacklist".
    blacklist = tmp_path / "opcache-blacklist.txt"
    blacklist.write_text(f"{tmp_path / 'restricted' / 'agent'}/\n")  # start_fpm's agent_dir
    fpm = php_fpm("restricted", opcache={"opcache.file_update_protection": 0,
                                         "opcache.blacklist_filename": str(blacklist),
                                         "opcache.restrict_api": "/srv/nowhere"})
    assert fpm.agent_dir == tmp_path / "restricted" / "agent"
    obs = await opcache_collector(fpm).collect()
    cached = check(obs, "opcache.agent_cached")
    assert cached.verdict is Verdict.NOTE
    assert "not known" in cached.summary
    assert obs.samples.value(OPCACHE_API_RESTRICTED) == 1


async def test_opcache_not_loaded_reports_no_directives(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(load_opcache=False)
    obs = await opcache_collector(fpm).collect()
    assert obs.samples.value(OPCACHE_ENABLED) == 0
    assert obs.samples.value(OPCACHE_VALIDATE_TIMESTAMPS) is None
    assert all(spec is not OPCACHE_SETTING_INFO for spec, _, _ in obs.samples.values)
    assert "not loaded" in check(obs, "opcache.status").summary


async def test_agent_warnings_are_a_note_and_logged_once(
    php_fpm: FpmFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fpm = php_fpm(opcache={"opcache.restrict_api": str(tmp_path / "elsewhere")})
    collector = opcache_collector(fpm)
    with caplog.at_level("WARNING", logger="exporter.collectors.opcache"):
        first = await collector.collect()
        await collector.collect()
    warnings = check(first, "opcache.agent_warnings")
    assert warnings.verdict is Verdict.NOTE
    assert any("restrict_api" in w for w in warnings.items)
    logged = [r.getMessage() for r in caplog.records if "PHP warning" in r.getMessage()]
    assert len(logged) == len(warnings.items)  # the second collection logged nothing new


async def test_an_agent_run_past_its_timeout_stops_and_frees_the_worker(php_fpm: FpmFactory) -> None:
    # One worker: while a runaway agent run holds it, nothing else is answered. set_time_limit(timeout)
    # ends it soon after the client gave up, not at request_terminate_timeout (60 s here).
    fpm = php_fpm(pool={"pm.max_children": 1})
    collector = opcache_collector(fpm, agent_timeout="1s")
    with pytest.raises(FastCGITimeout):
        await collector.agent.run_source("runaway", "<?php cachewarden_run(function (array $a): int {"
                                                    " while (true) { $a[] = 1; array_pop($a); } });")

    async def worker_free() -> bool:
        return (await fpm.get("/fpm-status", "json", timeout=1)).status == 200

    await async_wait_for(worker_free, timeout=8, message="the runaway agent run stopped by its time limit")


async def test_warnings_silenced_with_at_are_not_findings_but_others_are(php_fpm: FpmFactory) -> None:
    collector = opcache_collector(php_fpm())
    reply = await collector.agent.run_source("warnings", "<?php cachewarden_run(function (array $a): int {"
                                                        " @unlink('/nonexistent/silenced');"
                                                        " unlink('/nonexistent/reported'); return 1; });")
    assert reply.result == 1
    assert any("/nonexistent/reported" in w for w in reply.warnings)
    assert not any("silenced" in w for w in reply.warnings)


async def test_collections_on_a_pool_that_keeps_starting_workers_crash_none_and_name_the_pool(
        php_fpm: FpmFactory) -> None:
    # fpm_get_status() segfaults its worker while a sibling is still starting (php-src GH-18595): with
    # pm.max_requests=1 every request retires its worker, so a sibling is always starting. The pool's
    # name and worker pids come from the status page instead, which does not crash.
    fpm = php_fpm(pool={"pm": "dynamic", "pm.max_children": 4, "pm.start_servers": 2,
                        "pm.min_spare_servers": 1, "pm.max_spare_servers": 3, "pm.max_requests": 1,
                        "php_admin_value[opcache.revalidate_freq]": 30})
    collector = opcache_collector(fpm)
    page = fpm.script("page.php", "<?php echo 'ok';\n")

    async def churn() -> None:
        for _ in range(60):
            with contextlib.suppress(OSError, FastCGIError):  # a reset page request is counted in the log
                await fpm.get(page.name)

    churning = asyncio.gather(churn(), churn())
    failures = []
    for _ in range(30):
        try:
            obs = await collector.collect()
        except Exception as exc:  # any failed collection is what this test counts
            failures.append(repr(exc))
            continue
        assert source_of(obs, "revalidate_freq") == ("30", str(fpm.pool_config))
    await churning
    assert failures == []
    assert "signal 11" not in fpm.log.read_text()
