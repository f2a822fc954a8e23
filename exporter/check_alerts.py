"""Which shipped alert fires on what a failing check reports: the link from `check` to the runbooks.

A check names a finding (`stale views` on the views collector); an alert names the same finding as
Prometheus sees it (`CachewardenViewsStale`, on `cachewarden_views_stale > 0`). Only pairs where the
alert's expression reads the very gauge the check judges are listed: a check no alert watches maps
to nothing and the status page says so, rather than sending someone to a runbook about something else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from exporter.collectors.base import Check

# (collector kind, check name) -> the alerts whose expression reads what that check judges.
CHECK_ALERTS: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("views", "stale views"): ("CachewardenViewsStale",),
    ("views", "orphaned views"): ("CachewardenViewsOrphaned",),
    ("views", "uncompiled views"): ("CachewardenViewsUncompiled",),
    ("views", "compiled directory writable"): ("CachewardenViewsDirNotWritable",),
    ("opcache", "opcache.stale"): ("CachewardenOpcacheStaleScripts",),
    ("opcache", "opcache.missing"): ("CachewardenOpcacheMissingScripts",),
    ("opcache", "code.revision"): ("CachewardenCodeRevisionDrift",),
    ("opcache", "opcache.file_cache_stale"): ("CachewardenOpcacheFileCacheStale",),
    ("opcache", "opcache.preload"): ("CachewardenOpcachePreloadStale",),
    ("opcache", "opcache.outside_release"): ("CachewardenOpcacheOutsideRelease",),
    # OPcache's cache_full is either limit reached: memory or keys, whichever it was.
    ("opcache", "opcache.full"): ("CachewardenOpcacheMemoryFull", "CachewardenOpcacheKeysFull"),
    ("fpm", "fpm.up"): ("CachewardenFpmDown",),
    ("fpm", "fpm.max_children_reached"): ("CachewardenFpmMaxChildrenReached",),
    ("fpm", "fpm.listen_queue"): ("CachewardenFpmListenQueue",),
    ("redis", "server reachable"): ("CachewardenRedisDown",),
    ("redis", "clients"): ("CachewardenRedisClientsNearMax",),
    ("sql", "server reachable"): ("CachewardenDbDown",),
    ("sql", "connections"): ("CachewardenDbConnectionsHigh",),
    ("sql", "slow statements"): ("CachewardenDbSlowQueries",),
}

# The bootstrap caches' checks list one item per cache ("routes: PATH is older than …", or the bare name
# for what OPcache serves); each cache has its own alert, and some none (events, services).
_CACHE_ALERTS: Final[dict[str, dict[str, str]]] = {
    "stale bootstrap caches": {"config": "CachewardenLaravelConfigStale",
                               "routes": "CachewardenLaravelRoutesStale",
                               "packages": "CachewardenLaravelPackagesStale"},
    "half-written bootstrap caches": {"routes": "CachewardenLaravelRoutesStale",
                                      "packages": "CachewardenLaravelPackagesStale"},
    "served bootstrap caches": {"routes": "CachewardenLaravelRoutesStale"},
}


def _by_cache(check: Check) -> tuple[str, ...]:
    alerts = _CACHE_ALERTS.get(check.name, {})
    named = (alerts.get(item.partition(":")[0]) for item in check.items)
    return tuple(dict.fromkeys(a for a in named if a is not None))


def _config_values(check: Check) -> tuple[str, ...]:
    # Keys that differ are listed; a comparison that failed has none and sets no gauge an alert reads.
    return ("CachewardenLaravelConfigStale",) if check.items else ()


_ITEM_RULES: Final[dict[tuple[str, str], Callable[[Check], tuple[str, ...]]]] = {
    ("laravel_caches", "stale bootstrap caches"): _by_cache,
    ("laravel_caches", "half-written bootstrap caches"): _by_cache,
    ("laravel_caches", "served bootstrap caches"): _by_cache,
    ("laravel_caches", "cached config values"): _config_values,
}

# Every problem the discovery collector reports is counted in cachewarden_target_config_problems.
_KIND_ALERTS: Final[dict[str, tuple[str, ...]]] = {"discovery": ("CachewardenTargetConfigProblem",)}

# A collection that fails exports cachewarden_collector_up 0, and the target's own `…_up` gauge 0 for
# the collectors that have one (exporter.collectors.base.Collector.up).
_DOWN_ALERTS: Final[dict[str, tuple[str, ...]]] = {
    "fpm": ("CachewardenFpmDown",),
    "redis": ("CachewardenRedisDown",),
    "sql": ("CachewardenDbDown",),
}


# The shipped alerts no failing check stands for, and why: each reads a rate over time, a series of
# cachewarden itself, or a state a check reports only as a note. A new alert goes here or in a map above
# (tests/unit/test_status_page.py holds every shipped alert to one of the two).
NOT_FROM_A_CHECK: Final[dict[str, str]] = {
    "CachewardenDown": "Prometheus's own `up`: a cachewarden that is down shows no page",
    "CachewardenHealFailing": "failed heal runs over 30 minutes (the heal runs table lists them)",
    "CachewardenHealIneffective": "a plan given up on (the heal runs table lists its runs)",
    "CachewardenFpmStatusTimeouts": "status requests unanswered over 5 minutes",
    "CachewardenDbAbortedConnections": "aborted connections per second",
    "CachewardenOpcacheHitRatioLow": "a hit ratio over 5 minutes",
    "CachewardenOpcacheRestarts": "restarts over an hour",
    "CachewardenRedisHitRatioLow": "a hit ratio over 5 minutes",
    "CachewardenRedisEvictions": "evictions per second (the check notes evictions since start)",
    "CachewardenOpcacheDisabled": "the check reports a disabled OPcache as a note, not a failure",
    "CachewardenViewsDiskLow": "free bytes below a threshold the views collector does not judge",
}


def alerts_for_check(kind: str, check: Check) -> tuple[str, ...]:
    """The alerts that fire on failing `check` of collector `kind`; () when none watches it."""
    rule = _ITEM_RULES.get((kind, check.name))
    if rule is not None:
        return rule(check)
    return CHECK_ALERTS.get((kind, check.name)) or _KIND_ALERTS.get(kind, ())


def mapped_checks() -> set[tuple[str, str]]:
    """Every (kind, check name) mapped here (tests check each is a check its collector reports)."""
    return set(CHECK_ALERTS) | set(_ITEM_RULES)


def alerts_for_collector_down(kind: str) -> tuple[str, ...]:
    """The alerts that fire while collector `kind` cannot collect its target."""
    return ("CachewardenCollectorDown", *_DOWN_ALERTS.get(kind, ()))


def mapped_alerts() -> set[str]:
    """Every alert name this module can return (tests check each is shipped and has a runbook)."""
    names = {a for alerts in (*CHECK_ALERTS.values(), *_KIND_ALERTS.values(), *_DOWN_ALERTS.values())
             for a in alerts}
    names |= {a for alerts in _CACHE_ALERTS.values() for a in alerts.values()}
    names.add("CachewardenLaravelConfigStale")
    return names | {"CachewardenCollectorDown"}
