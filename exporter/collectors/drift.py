"""Bytecode-vs-source drift: which cached scripts OPcache serves in a version older than the file on disk.

With `validate_timestamps=1` OPcache reports each script's cached `timestamp` and the answer is exact: a
script is stale when its file's mtime differs from it (OPcache itself compares for inequality).

With `validate_timestamps=0` the cached version cannot be read from OPcache, so it is inferred, and
said to be inferred. For each cached path the tracker keeps an interval that must contain the moment
the script was compiled: `(cached_since, cached_by]`.
- `cached_by` is the first collection that saw it cached (its first-seen time).
- `cached_since` is the OPcache start/last-restart time for scripts present when tracking (re)starts,
  and the previous collection for scripts that appear later or were re-cached since (their `hits`
  dropped). A script that leaves the list, or an OPcache restart, forgets what was known.
Against the file's mtime:
- mtime > cached_by: **stale**, certainly: it was cached before the change and not re-cached since.
- cached_since < mtime <= cached_by: **suspect**: changed around the time it was cached, order unknown
  (typical for everything deployed shortly before cachewarden started).
- mtime <= cached_since: fresh.
- file gone: **missing** (OPcache still serves the deleted code).
Separately, with a release symlink (`current` -> releases/N), a cached script under the releases
directory but outside the release `current` points to is counted as **outside_release**: a gauge of
its own, since such code is superseded rather than modified.

Drift age: for the oldest known-stale script, the time since its source changed on disk (now - mtime),
at least 0. Times are the PHP host's clock (the agent's `now`), the same clock that wrote the mtimes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CachedScript:
    """One entry of OPcache's script list as the agent reports it."""

    path: str
    hits: int
    last_used: float
    timestamp: float | None  # the cached version's mtime; only with validate_timestamps=1
    mtime: float | None  # the file's mtime now; None if the file is gone

    @classmethod
    def from_row(cls, row: Sequence[object]) -> CachedScript:
        path, hits, last_used, timestamp, mtime = row
        return cls(
            str(path),
            int(hits),  # type: ignore[call-overload]
            float(last_used),  # type: ignore[arg-type]
            None if timestamp is None else float(timestamp),  # type: ignore[arg-type]
            None if mtime is None else float(mtime),  # type: ignore[arg-type]
        )


@dataclass(slots=True)
class DriftReport:
    exact: bool  # True: from OPcache's own timestamps; False: inferred
    stale: list[str] = field(default_factory=list)
    suspect: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    outside_release: list[str] = field(default_factory=list)
    drift_seconds: float = 0.0


@dataclass(slots=True)
class _Seen:
    cached_since: float
    cached_by: float
    hits: int


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
        scripts: Iterable[CachedScript],
        *,
        now: float,
        cache_epoch: float,
        validate_timestamps: bool,
        release_dir: str | None = None,
    ) -> DriftReport:
        """Classify `scripts` as seen at `now`; `cache_epoch` is max(start_time, last_restart_time)."""
        restarted = self._epoch is None or cache_epoch != self._epoch
        if restarted:
            self._seen.clear()
        # Scripts that appear now were compiled after the previous look, or after the (re)start.
        since_new = cache_epoch if restarted or self._previous is None else max(self._previous, cache_epoch)
        report = DriftReport(exact=validate_timestamps)
        releases = release_dir.rstrip("/").rsplit("/", 1)[0] if release_dir else None
        seen: dict[str, _Seen] = {}
        oldest_stale_mtime: float | None = None
        for s in scripts:
            known = self._seen.get(s.path)
            if known is None or s.hits < known.hits:
                known = _Seen(since_new, now, s.hits)
            else:
                known.hits = s.hits
            seen[s.path] = known
            if release_dir and releases and _under(s.path, releases) and not _under(s.path, release_dir):
                report.outside_release.append(s.path)
            if s.mtime is None:
                report.missing.append(s.path)
                continue
            if validate_timestamps and s.timestamp is not None:
                is_stale = s.mtime != s.timestamp
            else:
                is_stale = s.mtime > known.cached_by
                if not is_stale and s.mtime > known.cached_since:
                    report.suspect.append(s.path)
            if is_stale:
                report.stale.append(s.path)
                if oldest_stale_mtime is None or s.mtime < oldest_stale_mtime:
                    oldest_stale_mtime = s.mtime
        self._seen = seen  # paths that left the list are forgotten
        self._epoch, self._previous = cache_epoch, now
        if oldest_stale_mtime is not None:
            report.drift_seconds = max(0.0, now - oldest_stale_mtime)
        return report
