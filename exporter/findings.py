"""What a collector found wrong, as typed data the heal acts on.

A collector measures and hands these to the heal with its observation (`Observation.findings`); each
heal action declares which metrics it can bring down (exporter/heal/names.py, `Action.can_clear`) and
reads only these types, never the observation's `details` (free-form, for people and JSON). The lists
are a starting point only: every action re-checks each item right before it touches it, because files
change between a measurement and a fix.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class StaleView:
    compiled: str  # the compiled file
    source: str  # the Blade source it was compiled from, changed since


@dataclass(frozen=True, slots=True)
class ViewFindings:
    """Compiled Blade views (collector `views`)."""

    stale: tuple[StaleView, ...] = ()
    orphaned: tuple[str, ...] = ()  # compiled files whose source is gone
    uncompiled: tuple[str, ...] = ()  # sources with no compiled file


class ScriptProblem(enum.StrEnum):
    """Why a script cached in OPcache is wrong (collector `opcache`)."""

    STALE = "stale"  # its source changed after it was cached
    SUSPECT = "suspect"  # it may have (the timestamps do not tell)
    MISSING = "missing"  # its source is gone
    OUTSIDE_RELEASE = "outside_release"  # cached from another release directory than the current one


class EntryProblem(enum.StrEnum):
    """Why an entry of OPcache's file cache (opcache.file_cache) is wrong."""

    STALE = "stale"
    SUSPECT = "suspect"
    ORPHANED = "orphaned"  # its source is gone
    OUTSIDE_RELEASE = "outside_release"


def _frozen(m: Mapping[str, tuple[str, ...]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(dict(m))


@dataclass(frozen=True, slots=True)
class FileCacheFindings:
    """A scan of the file-cache folder the running PHP reads."""

    directory: str  # resolved, as measured
    system_id: str  # the running PHP's folder in it
    release_dir: str | None
    by_reason: Mapping[str, tuple[str, ...]]  # EntryProblem value -> source paths
    configured: str | None = None  # opcache.file_cache as FPM reports it, the path walked to reach it
    served_stale: bool = False  # validate_timestamps=0: OPcache loads entries unchecked
    complete: bool = True  # every folder could be listed: only then may entries be deleted

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_reason", _frozen(
            {r.value: tuple(self.by_reason.get(r.value, ())) for r in EntryProblem}))

    def sources(self, *reasons: EntryProblem) -> list[str]:
        return [p for r in reasons for p in self.by_reason[r.value]]


@dataclass(frozen=True, slots=True)
class OpcacheFindings:
    """Scripts in one pool's OPcache, its file cache and its preloaded code (collector `opcache`)."""

    scripts: Mapping[ScriptProblem, tuple[str, ...]] = field(default_factory=dict)
    file_cache: FileCacheFindings | None = None  # None: off, unreadable, or no folder of this PHP yet
    preload_stale: tuple[str, ...] = ()  # preloaded scripts changed on disk: only a restart replaces them
    exact: bool = False  # from OPcache's own timestamps (validate_timestamps=1), not inferred

    def to_invalidate(self) -> list[str]:
        """Every script found stale, suspect, missing or of another release, in shared memory or in the
        file cache, deduplicated in a stable order (opcache_invalidate drops both)."""
        seen: dict[str, None] = {}
        for problem in ScriptProblem:
            seen.update(dict.fromkeys(self.scripts.get(problem, ())))
        if self.file_cache is not None:
            seen.update(dict.fromkeys(self.file_cache.sources(
                EntryProblem.STALE, EntryProblem.SUSPECT, EntryProblem.OUTSIDE_RELEASE)))
        return list(seen)


@dataclass(frozen=True, slots=True)
class BootstrapCache:
    """One of a Laravel app's bootstrap caches (bootstrap/cache/*.php) as measured."""

    path: str
    present: bool
    stale: bool = False  # older than one of its inputs
    unparsable: bool = False  # half-written: PHP cannot load it


@dataclass(frozen=True, slots=True)
class LaravelCacheFindings:
    """A Laravel app's bootstrap caches (collector `laravel_caches`)."""

    caches: Mapping[str, BootstrapCache] = field(default_factory=dict)  # config, routes, events, …
    served_stale: tuple[str, ...] = ()  # caches OPcache serves in an older version than the disk's


Findings = ViewFindings | OpcacheFindings | LaravelCacheFindings
