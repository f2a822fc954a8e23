"""Preloaded code and the release being served, as parts of an OPcache collection.

    cachewarden_opcache_preload_scripts{target="www"} 412
    cachewarden_opcache_preload_stale{target="www"} 0
    cachewarden_opcache_release_switch_time_seconds{target="www"} 1.7e9
    cachewarden_opcache_release_settle_seconds{target="www"} 0

Preloading (`opcache.preload`) compiles scripts once, when FPM starts; their classes stay in memory
until FPM restarts: `opcache_reset()` and `opcache_invalidate()` cannot replace them (measured on PHP
8.2). A preloaded script changed on disk since OPcache started, gone, or under another release than
`current` therefore needs an FPM restart, and is counted as that, never among the cached scripts that
a reset can fix. OPcache's pseudo-entry `$PRELOAD$` is not a file and is never counted at all.

The release `current` points to is resolved here, in the sidecar, where no cache can be stale. Each FPM
worker keeps its own resolution of the symlink for up to `realpath_cache_ttl` seconds, so a worker
asked to resolve it would answer with whatever release it saw last, and a collection's answer would
depend on which worker ran it. What the workers actually run shows instead as cached scripts outside
the release, and how long they may keep resolving the old one as `_release_settle_seconds`: the
symlink's own change time plus realpath_cache_ttl, minus now.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.collectors.base import Check, Verdict
from exporter.metrics import Samples, gauge
from exporter.php.ini import Setting

PRELOAD_SCRIPTS = gauge(
    "cachewarden_opcache_preload_scripts", "Scripts preloaded when FPM started (opcache.preload)."
)
PRELOAD_STALE = gauge(
    "cachewarden_opcache_preload_stale",
    "Preloaded scripts changed on disk since FPM started, gone, or of another release than "
    "release_symlink's: only an FPM restart replaces them.",
)
RELEASE_SWITCH_TIME = gauge(
    "cachewarden_opcache_release_switch_time_seconds", "Unix time release_symlink was last replaced."
)
RELEASE_SETTLE_SECONDS = gauge(
    "cachewarden_opcache_release_settle_seconds",
    "Seconds until every FPM worker's realpath cache must resolve release_symlink anew "
    "(switch time + realpath_cache_ttl - now, at least 0).",
)
METRICS = (PRELOAD_SCRIPTS, PRELOAD_STALE, RELEASE_SWITCH_TIME, RELEASE_SETTLE_SECONDS)


@dataclass(frozen=True, slots=True)
class Release:
    """`release_symlink` as the sidecar resolves it."""

    link: str
    directory: str | None = None  # None when the link cannot be resolved
    switched_at: float | None = None  # the symlink's own mtime: when it was (re)placed
    problem: str | None = None


def resolve_release(link: Path) -> Release:
    """Resolve `link` now, bypassing every cache (blocking)."""
    try:
        switched = os.lstat(link).st_mtime
        directory = os.path.realpath(link, strict=True)
    except OSError as exc:
        return Release(str(link), problem=f"cannot resolve {link}: {exc.strerror or exc}")
    return Release(str(link), directory, switched)


def is_pseudo_entry(path: str) -> bool:
    """OPcache's own entries (`$PRELOAD$`) are not files: real scripts have absolute paths."""
    return not path.startswith("/")


def release_checks(s: Samples, release: Release, ttl: Setting, now: float) -> list[Check]:
    if release.directory is None or release.switched_at is None:
        return [Check("opcache.release", Verdict.PROBLEM,
                      f"{release.problem}: the release being served is unknown")]
    s.add(RELEASE_SWITCH_TIME, release.switched_at)
    checks = [Check("opcache.release", Verdict.OK,
                    f"{release.link} points to {release.directory} (resolved by cachewarden, not by an FPM "
                    "worker, whose realpath cache may be older)")]
    if not ttl.value.isdigit():
        return checks
    settle = max(0.0, release.switched_at + int(ttl.value) - now)
    s.add(RELEASE_SETTLE_SECONDS, settle)
    if settle > 0:
        checks.append(Check("opcache.release_settling", Verdict.NOTE,
                            f"{release.link} was switched {now - release.switched_at:.0f}s ago: FPM workers "
                            f"may keep resolving the previous release for up to {settle:.0f}s more "
                            f"(realpath_cache_ttl={ttl.value} set by {ttl.source})"))
    return checks


@dataclass(slots=True)
class PreloadReport:
    scripts: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # changed on disk since OPcache started
    gone: list[str] = field(default_factory=list)
    outside_release: list[str] = field(default_factory=list)

    @property
    def stale(self) -> list[str]:
        return sorted(set(self.changed) | set(self.gone) | set(self.outside_release))


def classify_preload(preload: Mapping[str, Any], start_time: float, release_dir: str | None) -> PreloadReport:
    """The agent's `preload` answer ({scripts: {path, mtime, ctime}}) against OPcache's start time."""
    columns = preload.get("scripts") or {}
    report = PreloadReport()
    releases = release_dir.rstrip("/").rsplit("/", 1)[0] + "/" if release_dir else None
    rows = zip(columns.get("path", []), columns.get("mtime", []), columns.get("ctime", []), strict=True)
    for path, mtime, ctime in rows:
        if not isinstance(path, str) or is_pseudo_entry(path):
            continue
        report.scripts.append(path)
        if mtime is None:
            report.gone.append(path)
        elif max(mtime, ctime or 0) > start_time:
            report.changed.append(path)
        if releases and release_dir and path.startswith(releases) and not path.startswith(
                release_dir.rstrip("/") + "/"):
            report.outside_release.append(path)
    return report


def preload_checks(s: Samples, report: PreloadReport, preload: Setting, start_time: float,
                   target: str) -> list[Check]:
    s.add(PRELOAD_SCRIPTS, len(report.scripts))
    stale = report.stale
    s.add(PRELOAD_STALE, len(stale))
    where = f"opcache.preload={preload.value} (set by {preload.source})"
    if not stale:
        return [Check("opcache.preload", Verdict.OK,
                      f"{where}: {len(report.scripts)} preloaded script(s), none changed since FPM started")]
    started = datetime.fromtimestamp(start_time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = []
    for label, items in (("changed since FPM started at " + started, report.changed),
                         ("gone", report.gone), ("of another release", report.outside_release)):
        if items:
            parts.append(f"{len(items)} {label}")
    return [Check("opcache.preload", Verdict.PROBLEM,
                  f"{len(stale)} preloaded script(s) needing an FPM restart ({'; '.join(parts)}): {where}; "
                  "preloaded code stays in memory until FPM restarts, opcache_reset() cannot replace it "
                  f"(cachewarden heal fpm.reload --target {target}, with php_fpm[].restart_command set)",
                  tuple(stale[:50]), len(stale))]
