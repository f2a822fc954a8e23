"""Bytecode-vs-source drift: which cached scripts OPcache serves in a version older than the file on disk.

With `validate_timestamps=1` OPcache reports each script's cached `timestamp` and the answer is exact: a
script is stale when its file's mtime differs from it (OPcache itself compares for inequality).

With `validate_timestamps=0` the cached version cannot be read from OPcache, so it is inferred, and
said to be inferred. For each cached path the tracker keeps an interval that must contain the moment
the script was compiled: `(cached_since, cached_by]`.
- `cached_by` is the first collection that saw it cached (its first-seen time).
- `cached_since` is the OPcache start/last-restart time for scripts present when tracking (re)starts,
  and the previous collection for scripts that appear later or were re-cached since (their `hits`
  dropped, or their `memory_consumption` changed: a script invalidated elsewhere and requested again
  between two looks may have more hits than before, but new code rarely takes the same memory). A
  script that leaves the list, or an OPcache restart, forgets what was known.
Against the file's change time, max(mtime, ctime): deploys that keep the old mtime (rsync -a, tar x,
cp -p) still set the ctime, which no tool can set back:
- mtime > cached_by: **stale**, certainly: it was cached before the change and not re-cached since.
- otherwise, change time > cached_since: **suspect**: changed around the time it was cached (order
  unknown, typical for everything deployed shortly before cachewarden started), or only its ctime is
  newer than the cache (an in-place copy keeping mtimes, or a mere chmod: cachewarden cannot tell).
- change time <= cached_since: fresh.
- file gone: **missing** (OPcache still serves the deleted code).
Separately, with a release symlink (`current` -> releases/N), a cached script under the releases
directory but outside the release `current` points to is counted as **outside_release**: a gauge of
its own, since such code is superseded rather than modified.

Drift age: for the oldest known-stale script, the time since its source changed on disk (now - mtime),
at least 0. Times are the PHP host's clock (the agent's `now`), the same clock that wrote the mtimes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple


class CachedScript(NamedTuple):
    """One entry of OPcache's script list as the agent reports it.

    A tuple rather than a dataclass: tens of thousands are built per collection, and tuples of plain
    values are cheap to build and are left alone by the garbage collector.
    """

    path: str
    hits: int
    last_used: float
    timestamp: float | None  # the cached version's mtime; only with validate_timestamps=1
    mtime: float | None  # the file's mtime now; None if the file is gone
    ctime: float | None = None  # the file's inode change time now; None if the file is gone or unknown
    memory: int = 0  # memory_consumption of the cached bytecode


@dataclass(slots=True)
class DriftReport:
    exact: bool  # True: from OPcache's own timestamps; False: inferred
    stale: list[str] = field(default_factory=list)
    suspect: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    outside_release: list[str] = field(default_factory=list)
    drift_seconds: float = 0.0


# What is known about one cached path: (cached_since, cached_by, hits and memory_consumption at the last
# look). Plain tuples: a collection handles tens of thousands, and NamedTuple construction alone would
# double its cost.
_Seen = tuple[float, float, int, int]
ScriptRow = tuple[str, int, float, float | None, float | None, float | None, int]


def _under(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


class DriftTracker:
    """Keeps first-seen knowledge for one OPcache across collections; feed it every status."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}
        self._epoch: float | None = None
        self._previous: float | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def forget(self, paths: Iterable[str]) -> None:
        """Drop knowledge of paths that were just invalidated: their next sighting is a fresh compile."""
        for p in paths:
            self._seen.pop(p, None)

    def update(
        self,
        scripts: Iterable[ScriptRow],
        *,
        now: float,
        cache_epoch: float,
        validate_timestamps: bool,
        release_dir: str | None = None,
    ) -> DriftReport:
        """Classify `scripts` (CachedScript-shaped rows) as seen at `now`.

        `cache_epoch` is max(start_time, last_restart_time) of OPcache.
        """
        restarted = self._epoch is None or cache_epoch != self._epoch
        if restarted:
            self._seen.clear()
        # Scripts that appear now were compiled after the previous look, or after the (re)start.
        since_new = cache_epoch if restarted or self._previous is None else max(self._previous, cache_epoch)
        report = DriftReport(exact=validate_timestamps)
        releases = release_dir.rstrip("/").rsplit("/", 1)[0] if release_dir else None
        seen: dict[str, _Seen] = {}
        oldest_stale_mtime: float | None = None
        exact = validate_timestamps
        previous = self._seen
        for path, hits, _, timestamp, mtime, ctime, memory in scripts:
            if path[:1] != "/":
                continue  # an OPcache pseudo-entry ($PRELOAD$), not a file
            known = previous.get(path)
            if known is None or hits < known[2] or memory != known[3]:
                known = (since_new, now, hits, memory)
            elif hits != known[2]:
                known = (known[0], known[1], hits, memory)
            seen[path] = known
            if releases and release_dir and _under(path, releases) and not _under(path, release_dir):
                report.outside_release.append(path)
            if mtime is None:
                report.missing.append(path)
                continue
            if exact and timestamp is not None:
                is_stale = mtime != timestamp
            else:
                is_stale = mtime > known[1]
                changed = mtime if ctime is None or ctime < mtime else ctime
                if not is_stale and changed > known[0]:
                    report.suspect.append(path)
            if is_stale:
                report.stale.append(path)
                if oldest_stale_mtime is None or mtime < oldest_stale_mtime:
                    oldest_stale_mtime = mtime
        self._seen = seen  # paths that left the list are forgotten
        self._epoch, self._previous = cache_epoch, now
        if oldest_stale_mtime is not None:
            report.drift_seconds = max(0.0, now - oldest_stale_mtime)
        return report
