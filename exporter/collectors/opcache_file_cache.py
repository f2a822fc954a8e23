"""The OPcache file cache as part of an OPcache collection: metrics and checks from one scan
(exporter.fs.opcache_file_cache), and what its entries mean for the code FPM serves.

    cachewarden_opcache_file_cache_readable{target="www"} 1
    cachewarden_opcache_file_cache_entries{target="www"} 20000
    cachewarden_opcache_file_cache_stale{target="www"} 3

The entries survive `opcache_reset()` and FPM restarts. With `validate_timestamps=0` OPcache loads them
without looking at the source, so a stale entry is what the next reset or cold start serves: it is a
problem then, and a note with `validate_timestamps=1` (OPcache compares the source's mtime and
recompiles). Counts are exported only from a complete scan: a directory that cannot be read is
reported by `_readable` 0 and a check, never as zero entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.collectors.base import Check, Verdict
from exporter.findings import EntryProblem, FileCacheFindings
from exporter.fs.opcache_file_cache import (
    FileCacheScan,
    FileCacheWalk,
    SourceTimes,
    classify,
    walk_file_cache,
)
from exporter.metrics import Samples, gauge
from exporter.php.ini import Setting

FILE_CACHE_READABLE = gauge(
    "cachewarden_opcache_file_cache_readable",
    "1 if the opcache.file_cache directory could be read whole (only when file_cache is set).",
)
FILE_CACHE_ENTRIES = gauge(
    "cachewarden_opcache_file_cache_entries", "Scripts in the file cache of the running PHP build."
)
FILE_CACHE_STALE = gauge(
    "cachewarden_opcache_file_cache_stale",
    "File-cache entries written before their source last changed (served as they are on the next "
    "reset or restart when validate_timestamps=0).",
)
FILE_CACHE_SUSPECT = gauge(
    "cachewarden_opcache_file_cache_suspect",
    "File-cache entries whose source's inode changed after they were written, its mtime did not.",
)
FILE_CACHE_ORPHANED = gauge(
    "cachewarden_opcache_file_cache_orphaned", "File-cache entries whose source file no longer exists."
)
FILE_CACHE_OUTSIDE_RELEASE = gauge(
    "cachewarden_opcache_file_cache_outside_release",
    "File-cache entries under a release directory other than the one release_symlink points to.",
)
FILE_CACHE_DRIFT_SECONDS = gauge(
    "cachewarden_opcache_file_cache_drift_seconds",
    "Time since the source of the oldest stale file-cache entry changed on disk (0 if none).",
)
METRICS = (FILE_CACHE_READABLE, FILE_CACHE_ENTRIES, FILE_CACHE_STALE, FILE_CACHE_SUSPECT,
           FILE_CACHE_ORPHANED, FILE_CACHE_OUTSIDE_RELEASE, FILE_CACHE_DRIFT_SECONDS)


@dataclass(frozen=True, slots=True)
class FileCacheView:
    """A scan and the settings that decide what it means."""

    scan: FileCacheScan
    validate_timestamps: Setting
    file_cache: Setting

    @property
    def served_stale(self) -> bool:
        """True when OPcache loads entries unchecked, so stale ones are served."""
        return self.validate_timestamps.value != "1"

    def findings(self, release_dir: str | None) -> FileCacheFindings | None:
        """What the heal acts on; None when there is no folder of the running PHP to act in."""
        s = self.scan
        if s.resolved is None or s.system_id is None:
            return None
        return FileCacheFindings(
            s.resolved, s.system_id, release_dir,
            {EntryProblem.STALE: tuple(s.stale), EntryProblem.SUSPECT: tuple(s.suspect),
             EntryProblem.ORPHANED: tuple(s.orphaned),
             EntryProblem.OUTSIDE_RELEASE: tuple(s.outside_release)},
            configured=s.directory, served_stale=self.served_stale, complete=s.complete)

    def details(self) -> dict[str, Any]:
        """What the heal acts on: where the entries are and which ones are wrong (paths of sources)."""
        s = self.scan
        return {"directory": s.resolved, "configured": s.directory, "system_id": s.system_id,
                "complete": s.complete,
                "served_stale": self.served_stale,
                "stale": s.stale, "suspect": s.suspect, "orphaned": s.orphaned,
                "outside_release": s.outside_release}


def source_times(columns: Mapping[str, list[Any]]) -> dict[str, SourceTimes]:
    """The agent's cached-script columns as path -> (mtime, ctime): already stat'ed inside FPM."""
    if not columns:
        return {}
    return dict(zip(columns["path"], zip(columns["mtime"], columns["ctime"], strict=True), strict=True))


class FileCacheReader:
    """Scans one pool's file cache per collection. The listing of the directory the last collection
    found is started before the agent's request, so the two overlap (FPM answers from another
    process); the entries are judged once the agent's stats of the cached scripts are in."""

    def __init__(self) -> None:
        self._directory: str | None = None
        self._walk: asyncio.Future[FileCacheWalk] | None = None
        self._cancel = threading.Event()

    def start(self) -> None:
        """Begin listing the last known directory, if any (call before the agent's request)."""
        self.abandon()
        if self._directory is not None:
            self._cancel = threading.Event()
            self._walk = asyncio.ensure_future(
                asyncio.to_thread(walk_file_cache, self._directory, None, self._cancel))

    def abandon(self) -> None:
        """Stop a listing nobody will read (the collection failed or timed out)."""
        if self._walk is not None:
            self._cancel.set()
            self._walk.add_done_callback(_swallow)
            self._walk = None

    async def scan(self, directory: str, sources: Mapping[str, SourceTimes],
                   release_dir: str | None) -> FileCacheScan:
        try:
            walk: FileCacheWalk | None = None
            if self._walk is not None and directory == self._directory:
                pending, self._walk = self._walk, None
                walk = await pending
                if walk.undecided:
                    walk = None
            self.abandon()
            self._directory = directory
            if walk is None:
                walk = await asyncio.to_thread(walk_file_cache, directory, list(sources), self._cancel)
            return await asyncio.to_thread(classify, walk, sources, release_dir)
        except BaseException:
            self._cancel.set()  # timed out: the thread stops at its next look at the flag
            raise

    def forget(self) -> None:
        """file_cache is no longer set: nothing to list before the next collection."""
        self.abandon()
        self._directory = None


def _swallow(future: asyncio.Future[FileCacheWalk]) -> None:
    with contextlib.suppress(BaseException):
        future.result()


def record(s: Samples, view: FileCacheView, now: float, with_release: bool) -> list[Check]:
    """Samples and checks for one scan."""
    sc = view.scan
    where = f"opcache.file_cache={view.file_cache.value} (set by {view.file_cache.source})"
    s.add(FILE_CACHE_READABLE, 1 if sc.complete else 0)
    if not sc.complete:
        items = tuple([sc.problem] if sc.problem else sc.unreadable)
        return [Check("opcache.file_cache", Verdict.PROBLEM,
                      f"{where} cannot be read whole by cachewarden, so its entries are unknown: run "
                      "cachewarden as FPM's user or root, or give it read access", items[:50], len(items))]
    s.add(FILE_CACHE_ENTRIES, sc.entries)
    s.add(FILE_CACHE_STALE, len(sc.stale))
    s.add(FILE_CACHE_SUSPECT, len(sc.suspect))
    s.add(FILE_CACHE_ORPHANED, len(sc.orphaned))
    s.add(FILE_CACHE_DRIFT_SECONDS, max(0.0, now - sc.oldest_stale_mtime) if sc.oldest_stale_mtime else 0)
    if with_release:
        s.add(FILE_CACHE_OUTSIDE_RELEASE, len(sc.outside_release))
    checks = [Check("opcache.file_cache", Verdict.OK,
                    f"{where}: {sc.entries} entries under system id {sc.system_id or '(none yet)'}")]
    vt = view.validate_timestamps
    if view.served_stale:
        consequence = (f"validate_timestamps=0 (set by {vt.source}) makes OPcache load them without "
                       "checking the source, and the file cache survives opcache_reset() and FPM "
                       "restarts: the next reset or restart serves the old code; opcache.invalidate "
                       "drops them")
        verdict = Verdict.PROBLEM
    else:
        consequence = (f"validate_timestamps=1 (set by {vt.source}): OPcache compares each with its "
                       "source and recompiles it, so none is served")
        verdict = Verdict.NOTE
    if sc.stale:
        checks.append(Check("opcache.file_cache_stale", verdict,
                            f"{len(sc.stale)} file-cache entries older than their source: {consequence}",
                            tuple(sorted(sc.stale)[:50]), len(sc.stale)))
    else:
        checks.append(Check("opcache.file_cache_stale", Verdict.OK,
                            "no file-cache entry is older than its source"))
    if sc.suspect:
        checks.append(Check("opcache.file_cache_suspect", verdict,
                            f"{len(sc.suspect)} file-cache entries whose source was replaced keeping its "
                            f"mtime (or chmod'ed) after they were written: {consequence}",
                            tuple(sorted(sc.suspect)[:50]), len(sc.suspect)))
    if sc.orphaned:
        checks.append(Check("opcache.file_cache_orphaned", Verdict.NOTE,
                            f"{len(sc.orphaned)} file-cache entries whose source is gone: never loaded, "
                            "they only take room (opcache.purge_file_cache removes them)",
                            tuple(sorted(sc.orphaned)[:50]), len(sc.orphaned)))
    if with_release and sc.outside_release:
        checks.append(Check("opcache.file_cache_outside_release", Verdict.NOTE,
                            f"{len(sc.outside_release)} file-cache entries of another release than the "
                            "current one (opcache.purge_file_cache removes them)",
                            tuple(sorted(sc.outside_release)[:50]), len(sc.outside_release)))
    if sc.other_system_ids:
        checks.append(Check("opcache.file_cache_other_builds", Verdict.NOTE,
                            f"{len(sc.other_system_ids)} system-id folder(s) of other PHP builds in "
                            f"{sc.resolved}: never read by this PHP; remove them by hand after an upgrade",
                            tuple(sc.other_system_ids)))
    if sc.refused:
        checks.append(Check("opcache.file_cache_foreign", Verdict.NOTE,
                            f"{len(sc.refused)} path(s) in the file cache are not entries OPcache writes "
                            "(symlinks, hard links, other files): not followed, never removed",
                            tuple(sorted(sc.refused)[:50]), len(sc.refused)))
    return checks
