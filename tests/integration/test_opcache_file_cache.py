"""OPcache's file cache in a real php-fpm8.2: old bytecode that survives a restart is measured and named,
opcache.invalidate heals it for good, opcache.purge_file_cache stays inside the directory, and a directory
cachewarden cannot read is a reported state."""

from __future__ import annotations

import json
import math
import os
import pwd
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exporter.collectors import build_collectors
from exporter.collectors.base import Observation, Verdict
from exporter.collectors.opcache import OPCACHE_SCRIPTS_STALE, OpcacheCollector
from exporter.collectors.opcache_file_cache import (
    FILE_CACHE_ENTRIES,
    FILE_CACHE_ORPHANED,
    FILE_CACHE_READABLE,
    FILE_CACHE_STALE,
    FileCacheView,
    record,
)
from exporter.config import Config, parse
from exporter.fs.opcache_file_cache import scan_file_cache
from exporter.heal.actions.opcache_file_cache import FileCacheFindings, purge
from exporter.heal.runner import HealRunner
from exporter.heal.store import MemoryStore
from exporter.metrics import Samples
from exporter.php.ini import Setting
from exporter.scheduler import Scheduler
from tests.support import phpfpm
from tests.support.phpfpm import Fpm, FpmFactory
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

LONG_AGO = time.time() - 3600  # older than file_update_protection, so OPcache caches the file


@dataclass
class Setup:
    fpm: Fpm
    file_cache: Path
    page: Path
    config: Config


def entries(file_cache: Path) -> dict[str, Path]:
    """Entry files by the source path they stand for."""
    out = {}
    for bin_path in file_cache.glob("*/**/*.bin"):
        rel = bin_path.relative_to(file_cache)
        out["/" + "/".join(rel.parts[1:])[: -len(".bin")]] = bin_path
    return out


def start(php_fpm: FpmFactory, tmp_path: Path) -> Setup:
    file_cache = tmp_path / "opcache-file-cache"
    file_cache.mkdir()
    # As in the incident: the base file leaves validate_timestamps on, a late conf.d file turns it off.
    fpm = php_fpm(opcache={"opcache.file_cache": str(file_cache)},
                  conf_d={"99-opcache-optimization.ini": "opcache.validate_timestamps=0\n"})
    page = fpm.script("page.php", "<?php echo 'old';", mtime=LONG_AGO)
    config = parse({"php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                                 "pool_config": str(fpm.pool_config)}]})
    return Setup(fpm, file_cache, page, config)


def collector(config: Config) -> OpcacheCollector:
    c = build_collectors(config, {"fpm": False})[0]
    assert isinstance(c, OpcacheCollector)
    return c


async def deploy_and_restart(setup: Setup) -> None:
    """Serve the page (OPcache writes its entry), change it on disk, restart FPM: old code again."""
    assert (await setup.fpm.get("page.php")).body == b"old"
    entry = entries(setup.file_cache)[str(setup.page)]
    written = math.floor(entry.stat().st_mtime)

    async def clock_past_the_entry() -> bool:  # a deploy's mtime lies after the entry and 2 s in the past
        return time.time() > written + 4

    await async_wait_for(clock_past_the_entry, message="clock past the entry's write")
    setup.page.write_text("<?php echo 'new';")
    changed = math.floor(time.time()) - 3
    os.utime(setup.page, (changed, changed))
    setup.fpm.restart()
    assert (await setup.fpm.get("page.php")).body == b"old", "the file cache serves the old code"


def check(obs: Observation, name: str) -> Any:
    return next(c for c in obs.checks if c.name == name)


async def test_stale_entry_after_a_restart_is_stale_code_and_check_names_the_cause(
        php_fpm: FpmFactory, tmp_path: Path) -> None:
    setup = start(php_fpm, tmp_path)
    await deploy_and_restart(setup)

    obs = await collector(setup.config).collect()

    assert obs.samples.value(FILE_CACHE_READABLE) == 1
    assert obs.samples.value(FILE_CACHE_STALE) == 1
    assert obs.samples.value(FILE_CACHE_ENTRIES) == len(entries(setup.file_cache))
    # Shared memory was just rebuilt, after the change: only the entry tells it is old code.
    assert obs.samples.value(OPCACHE_SCRIPTS_STALE) == 1
    assert obs.details["stale"] == [str(setup.page)]
    late_ini = str(setup.fpm.conf_d / "99-opcache-optimization.ini")
    stale = check(obs, "opcache.stale")
    assert stale.verdict is Verdict.PROBLEM
    assert f"validate_timestamps=0 set by {late_ini}" in stale.summary
    assert "survives opcache_reset() and FPM restarts" in stale.summary
    entry_check = check(obs, "opcache.file_cache_stale")
    assert entry_check.verdict is Verdict.PROBLEM
    assert entry_check.items == (str(setup.page),)
    assert f"opcache.file_cache={setup.file_cache}" in check(obs, "opcache.file_cache").summary


async def test_invalidate_drops_the_entry_and_fpm_serves_the_new_code_after_another_restart(
        php_fpm: FpmFactory, tmp_path: Path) -> None:
    setup = start(php_fpm, tmp_path)
    await deploy_and_restart(setup)
    runner = HealRunner(setup.config, Scheduler([collector(setup.config)]), MemoryStore())

    run = await runner.run_action("opcache.invalidate", "www", False, "test")

    assert run.result == "verified", run.as_dict()
    assert run.records[0].outcome is not None
    assert run.records[0].outcome.errors == []
    assert (await setup.fpm.get("page.php")).body == b"new"
    entry = entries(setup.file_cache).get(str(setup.page))
    assert entry is None or entry.stat().st_mtime >= setup.page.stat().st_mtime, "gone or rewritten"
    setup.fpm.restart()
    assert (await setup.fpm.get("page.php")).body == b"new", "a restart keeps the new code"
    obs = await collector(setup.config).collect()
    assert obs.samples.value(FILE_CACHE_STALE) == 0
    assert obs.samples.value(OPCACHE_SCRIPTS_STALE) == 0


async def test_reset_alone_is_not_run_for_what_the_file_cache_brings_back(
        php_fpm: FpmFactory, tmp_path: Path) -> None:
    setup = start(php_fpm, tmp_path)
    await deploy_and_restart(setup)
    runner = HealRunner(setup.config, Scheduler([collector(setup.config)]), MemoryStore())

    run = await runner.run_action("opcache.reset", "www", False, "test")

    assert run.result == "not_clearable", run.as_dict()
    assert run.records == []
    assert "cachewarden_opcache_scripts_stale" in (run.note or "")
    assert (await setup.fpm.get("page.php")).body == b"old"


async def test_purge_deletes_orphaned_entries_and_nothing_a_link_points_to(
        php_fpm: FpmFactory, tmp_path: Path) -> None:
    setup = start(php_fpm, tmp_path)
    gone = setup.fpm.script("gone.php", "<?php echo 'gone';", mtime=LONG_AGO)
    kept = setup.fpm.script("kept.php", "<?php echo 'kept';", mtime=LONG_AGO)
    for script in ("page.php", "gone.php", "kept.php"):
        assert (await setup.fpm.get(script)).status == 200
    by_source = entries(setup.file_cache)
    system_id = by_source[str(gone)].relative_to(setup.file_cache).parts[0]
    gone.unlink()
    kept.unlink()
    # Outside the file cache: what an attacker able to write into it would like deleted.
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.php.bin"
    victim.write_text("precious")
    hard_victim = outside / "hard.bin"
    hard_victim.write_text("precious too")
    www_dir = by_source[str(gone)].parent
    (www_dir / "linked.php.bin").symlink_to(victim)
    os.link(hard_victim, www_dir / "hard.php.bin")
    (www_dir / "sub").symlink_to(outside, target_is_directory=True)

    obs = await collector(setup.config).collect()
    assert obs.samples.value(FILE_CACHE_ORPHANED) == 2
    refused = check(obs, "opcache.file_cache_foreign")
    assert {f"{www_dir}/linked.php.bin", f"{www_dir}/hard.php.bin", f"{www_dir}/sub"} <= set(refused.items)
    # Between the measurement and the fix, one orphaned entry is swapped for a symlink out of the cache.
    by_source[str(kept)].unlink()
    by_source[str(kept)].symlink_to(victim)
    runner = HealRunner(setup.config, Scheduler([collector(setup.config)]), MemoryStore())

    dry = await runner.run_action("opcache.purge_file_cache", "www", True, "test")
    assert dry.records[0].outcome is not None
    assert dry.records[0].outcome.done == [f"would delete {by_source[str(gone)]} (orphaned)"]
    assert by_source[str(gone)].exists()
    run = await runner.run_action("opcache.purge_file_cache", "www", False, "test")

    outcome = run.records[0].outcome
    assert outcome is not None
    assert outcome.done == [f"deleted {by_source[str(gone)]} (orphaned)"]
    assert not by_source[str(gone)].exists()
    assert victim.read_text() == "precious"
    assert hard_victim.read_text() == "precious too"
    assert by_source[str(kept)].is_symlink()
    assert (www_dir / "hard.php.bin").exists()
    # Findings crafted to lead out of the folder: through a symlinked directory, a hard link, `..`.
    crafted = FileCacheFindings(str(setup.file_cache.resolve()), system_id, None, {
        "orphaned": [f"{setup.fpm.docroot}/sub/victim.php", f"{setup.fpm.docroot}/hard.php",
                     f"{setup.fpm.docroot}/../outside/victim.php", f"{setup.fpm.docroot}/linked.php"],
        "stale": [], "suspect": [], "outside_release": []})
    forced = purge(setup.file_cache.resolve(), crafted, dry_run=False)
    assert forced.done == []
    assert len(forced.refused) == 4, forced.refused
    assert victim.read_text() == "precious"
    assert hard_victim.read_text() == "precious too"


def scan_as(user: str, directory: Path) -> dict[str, Any]:
    """Scan and record in a child process running as `user`: cachewarden as another user than FPM's."""
    entry = pwd.getpwnam(user)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to `user`, measure, report, and leave without running any cleanup
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            scan = scan_file_cache(str(directory), {})
            samples = Samples("www")
            view = FileCacheView(scan, Setting("validate_timestamps", "0", "x.ini"),
                                 Setting("file_cache", str(directory), "x.ini"))
            checks = record(samples, view, 0.0, False)
            os.write(write_end, json.dumps({
                "problem": scan.problem, "readable": samples.value(FILE_CACHE_READABLE),
                "entries": samples.value(FILE_CACHE_ENTRIES), "check": checks[0].as_dict()}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, Any] = json.loads(data)
    return result


async def test_a_file_cache_cachewarden_cannot_read_is_reported_not_counted(
        php_fpm: FpmFactory, tmp_path: Path) -> None:
    setup = start(php_fpm, tmp_path)
    assert (await setup.fpm.get("page.php")).body == b"old"
    setup.file_cache.chmod(0o700)  # FPM's user (root here) only, as OPcache makes its own folders
    # cachewarden running as another user than FPM's: a real EACCES, which root never gets.
    result = scan_as("nobody", setup.file_cache)
    assert "Permission denied" in result["problem"]
    assert result["readable"] == 0
    assert result["entries"] is None, "unknown, not zero"
    assert result["check"]["verdict"] == "problem"
    assert "cannot be read whole" in result["check"]["summary"]
