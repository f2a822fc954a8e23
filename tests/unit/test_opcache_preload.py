"""Preloaded scripts judged apart from the cache, `$PRELOAD$` never a script, and the release resolved by
the sidecar with how long workers may keep the old one."""

from __future__ import annotations

import os
import time
from pathlib import Path

from exporter.collectors.base import Verdict
from exporter.collectors.drift import DriftTracker
from exporter.collectors.opcache_preload import (
    RELEASE_SETTLE_SECONDS,
    RELEASE_SWITCH_TIME,
    classify_preload,
    release_checks,
    resolve_release,
)
from exporter.metrics import Samples
from exporter.php.ini import Setting

START = 1_700_000_000.0


def columns(*rows: tuple[str, int | None, int | None]) -> dict[str, object]:
    return {"scripts": {"path": [r[0] for r in rows], "mtime": [r[1] for r in rows],
                        "ctime": [r[2] for r in rows]}}


def test_preloaded_scripts_changed_gone_or_of_another_release_need_a_restart() -> None:
    report = classify_preload(columns(
        ("$PRELOAD$", None, None),
        ("/app/releases/2/Kept.php", int(START - 10), int(START - 10)),
        ("/app/releases/2/Changed.php", int(START - 10), int(START + 5)),
        ("/app/releases/2/Gone.php", None, None),
        ("/app/releases/1/Old.php", int(START - 10), int(START - 10)),
    ), START, "/app/releases/2")

    assert "$PRELOAD$" not in report.scripts
    assert len(report.scripts) == 4
    assert report.stale == ["/app/releases/1/Old.php", "/app/releases/2/Changed.php",
                            "/app/releases/2/Gone.php"]


def test_pseudo_entries_are_no_cached_scripts_for_the_drift_tracker() -> None:
    report = DriftTracker().update([("$PRELOAD$", 0, 0.0, 0.0, None, None, 3640)], now=START,
                                   cache_epoch=START - 60, validate_timestamps=True)
    assert report.missing == []
    assert report.stale == []


def test_the_release_is_resolved_here_with_the_time_workers_may_keep_the_old_one(tmp_path: Path) -> None:
    (tmp_path / "releases" / "7").mkdir(parents=True)
    link = tmp_path / "current"
    link.symlink_to("releases/7")
    switched = time.time() - 30
    os.utime(link, (switched, switched), follow_symlinks=False)
    release = resolve_release(link)
    s = Samples("www")

    checks = release_checks(s, release, Setting("realpath_cache_ttl", "120", "/etc/php.ini"), switched + 30)

    assert release.directory == str(tmp_path / "releases" / "7")
    assert s.value(RELEASE_SWITCH_TIME) == switched
    assert s.value(RELEASE_SETTLE_SECONDS) == 90
    assert checks[1].verdict is Verdict.NOTE
    assert "up to 90s more (realpath_cache_ttl=120 set by /etc/php.ini)" in checks[1].summary


def test_a_dangling_release_symlink_is_a_problem_and_no_metric(tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to("releases/9")
    s = Samples("www")
    checks = release_checks(s, resolve_release(link), Setting("realpath_cache_ttl", "120", "default"), START)
    assert checks[0].verdict is Verdict.PROBLEM
    assert s.value(RELEASE_SWITCH_TIME) is None
    assert s.value(RELEASE_SETTLE_SECONDS) is None
