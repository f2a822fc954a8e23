"""Verify: wait, up to a deadline, until the app is served as deployed, measuring with the collectors.

The conditions, each measured afresh by the collector that exports it (so `/metrics` and the deploy
never disagree):
- views: no compiled view stale (`cachewarden_views_stale`), none uncompiled (`_uncompiled`);
- bootstrap caches (when that collector runs): none stale, half-written or served by OPcache in
  another version (`cachewarden_laravel_cache_stale`, `_unparsable`, `_served_stale`);
- OPcache in the app's pool: no script stale or suspect, none of a release `current` no longer points
  to (OPcache also keeps it under the symlinked path), no stale file-cache entry, no preloaded
  script changed (`cachewarden_opcache_preload_stale`: only a restart replaces it, so waiting for it
  is pointless and verify stops at once), FPM running the revision on disk (`code.revision`, when
  revision_file is set), and every worker's realpath cache past the switch of release_symlink
  (`cachewarden_opcache_release_settle_seconds`), since a worker may resolve `current` to the old
  release until then. Scripts of the old release that requests still running old code compiled again
  after activation are handed to a callback (the deploy invalidates them) and looked at again.
A collector that fails is itself an unmet condition. Progress is reported to a callback after each
look (the command shows it on a terminal).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from exporter.collectors.base import Observation, Verdict
from exporter.collectors.laravel_caches import CACHE_SERVED_STALE, CACHE_STALE, CACHE_UNPARSABLE
from exporter.collectors.opcache import (
    OPCACHE_SCRIPTS_OUTSIDE_RELEASE,
    OPCACHE_SCRIPTS_STALE,
    OPCACHE_SCRIPTS_SUSPECT,
)
from exporter.collectors.opcache_file_cache import FILE_CACHE_STALE
from exporter.collectors.opcache_preload import PRELOAD_STALE, RELEASE_SETTLE_SECONDS
from exporter.collectors.views import VIEWS_STALE, VIEWS_UNCOMPILED
from exporter.config import LaravelTarget, PhpFpmTarget
from exporter.deploy.records import PhaseRecord
from exporter.metrics import MetricSpec
from exporter.scheduler import Scheduler

POLL_INTERVAL = 0.25


@dataclass(frozen=True, slots=True)
class Unmet:
    condition: str  # the metric or check that decides it
    message: str
    final: bool = False  # waiting cannot change it

    def __str__(self) -> str:
        return f"{self.condition}: {self.message}"


# Called after each look with what is still unmet and the seconds left before the deadline.
Progress = Callable[[list[Unmet], float], None]
# Called with an OPcache observation that still lists scripts of the old release once no worker can
# resolve to it any more: requests that were running old code during activation compiled them again.
Leftovers = Callable[[Observation], Awaitable[None]]


def _count(obs: Observation, spec: MetricSpec, what: str, name: str) -> list[Unmet]:
    value = obs.samples.value(spec)
    if value:
        return [Unmet(spec.name.removesuffix("_total"), f"{value:g} {what} on {name}")]
    return []


def view_conditions(obs: Observation, laravel: LaravelTarget) -> list[Unmet]:
    return (_count(obs, VIEWS_STALE, "compiled view(s) older than their source", laravel.name)
            + _count(obs, VIEWS_UNCOMPILED, "view(s) without a compiled file", laravel.name))


def opcache_conditions(obs: Observation, pool: PhpFpmTarget) -> list[Unmet]:
    out = (_count(obs, OPCACHE_SCRIPTS_STALE, "cached script(s) older than their source", pool.name)
           + _count(obs, OPCACHE_SCRIPTS_SUSPECT, "cached script(s) that may be older than their source",
                    pool.name)
           + _count(obs, FILE_CACHE_STALE, "opcache.file_cache entries older than their source", pool.name))
    if pool.release_symlink is not None:
        out += _count(obs, OPCACHE_SCRIPTS_OUTSIDE_RELEASE, "cached script(s) of a release "
                      f"{pool.release_symlink} no longer points to", pool.name)
    preload = obs.samples.value(PRELOAD_STALE)
    if preload:
        fix = ("fpm.reload ran but FPM still serves them" if pool.restart_command else
               f"set php_fpm[{pool.name}].restart_command to let the deploy restart FPM, or restart it "
               "by hand")
        out.append(Unmet(PRELOAD_STALE.name, f"{preload:g} preloaded script(s) changed, gone or of another "
                         f"release: only an FPM restart replaces preloaded code; {fix}", final=True))
    revision = next((c for c in obs.checks if c.name == "code.revision"), None)
    if revision is not None and revision.verdict is not Verdict.OK:
        out.append(Unmet("code.revision", revision.summary))
    settle = obs.samples.value(RELEASE_SETTLE_SECONDS)
    if settle:
        out.append(Unmet(RELEASE_SETTLE_SECONDS.name, f"FPM workers may resolve {pool.release_symlink} to "
                         f"the previous release for {settle:.0f}s more (realpath_cache_ttl)"))
    return out


def bootstrap_conditions(obs: Observation, laravel: LaravelTarget) -> list[Unmet]:
    out = []
    for spec, what in ((CACHE_STALE, "older than its inputs"), (CACHE_UNPARSABLE, "half-written"),
                       (CACHE_SERVED_STALE, "served by OPcache in another version than on disk")):
        caches = sorted(lv[1] for s, lv, v in obs.samples.values if s is spec and v)
        if caches:
            out.append(Unmet(spec.name, f"bootstrap cache(s) {', '.join(caches)} of {laravel.name} {what}"))
    return out


async def conditions(scheduler: Scheduler, laravel: LaravelTarget, pool: PhpFpmTarget | None,
                     leftovers: Leftovers | None = None) -> list[Unmet]:
    """Every unmet condition, from fresh collections of the app's views, bootstrap caches and its pool's
    OPcache."""
    looks = [("views", laravel.name), ("laravel_caches", laravel.name)]
    looks += [("opcache", pool.name)] if pool is not None else []
    out: list[Unmet] = []
    for kind, name in looks:
        try:
            status = await scheduler.collect(kind, name)
        except KeyError:
            if kind != "laravel_caches":  # switched off (--no-collector.laravel_caches): not measured
                out.append(Unmet(f"{kind}/{name}", f"the {kind} collector is disabled: nothing verifies it",
                                 final=True))
            continue
        if not status.up or status.observation is None:
            out.append(Unmet(f"{kind}/{name}", f"the {kind} collector failed: {status.error}"))
        elif kind == "views":
            out.extend(view_conditions(status.observation, laravel))
        elif kind == "laravel_caches":
            out.extend(bootstrap_conditions(status.observation, laravel))
        else:
            assert pool is not None
            found = opcache_conditions(status.observation, pool)
            names = {u.condition for u in found}
            if leftovers is not None and OPCACHE_SCRIPTS_OUTSIDE_RELEASE.name in names and \
                    RELEASE_SETTLE_SECONDS.name not in names:
                await leftovers(status.observation)
            out.extend(found)
    return out


async def verify(scheduler: Scheduler, laravel: LaravelTarget, pool: PhpFpmTarget | None,
                 record: PhaseRecord, dry_run: bool, deadline: float, progress: Progress | None,
                 leftovers: Leftovers | None = None) -> None:
    """Fill `record` with verified/unverified by `deadline` (time.monotonic()); a dry run takes one
    look and lists what would be waited for."""
    while True:
        unmet = await conditions(scheduler, laravel, pool, None if dry_run else leftovers)
        left = max(0.0, deadline - time.monotonic())
        if progress is not None:
            progress(unmet, left)
        if dry_run:
            record.outcome.notes.extend(f"would wait for {u}" for u in unmet)
            return
        if not unmet:
            record.result = "verified"
            return
        if left <= 0 or any(u.final for u in unmet):
            record.result = "unverified"
            record.unmet = [str(u) for u in unmet]
            return
        await asyncio.sleep(min(POLL_INTERVAL, left))
