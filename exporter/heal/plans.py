"""Heal plans: which actions an alert may trigger, in which order, and when its condition is gone.

The shipped defaults cover every alert that has a safe fix; `heal.plans` in the configuration adds
plans or replaces a default by alertname. An alert without a plan is never acted on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.collectors.base import Observation
from exporter.collectors.laravel_caches import (
    CACHE_SERVED_STALE,
    CACHE_STALE,
    CACHE_UNPARSABLE,
    CONFIG_KEYS_DIFFERING,
)
from exporter.collectors.opcache import (
    CODE_REVISION_DRIFT,
    OPCACHE_SCRIPTS_MISSING,
    OPCACHE_SCRIPTS_OUTSIDE_RELEASE,
    OPCACHE_SCRIPTS_STALE,
    OPCACHE_SCRIPTS_SUSPECT,
)
from exporter.collectors.opcache_file_cache import (
    FILE_CACHE_ORPHANED,
    FILE_CACHE_OUTSIDE_RELEASE,
    FILE_CACHE_STALE,
    FILE_CACHE_SUSPECT,
)
from exporter.collectors.opcache_preload import PRELOAD_STALE
from exporter.collectors.views import VIEWS_DIR_WRITABLE, VIEWS_ORPHANED, VIEWS_STALE, VIEWS_UNCOMPILED
from exporter.config import HealCondition, HealConfig, HealPlan
from exporter.heal.actions.laravel_cache_rebuild import ALL, NAMED
from exporter.metrics import MetricSpec


def at_most(spec: MetricSpec, value: float = 0, **labels: str) -> HealCondition:
    return HealCondition(metric=spec.name, labels=labels, max=value)


def at_least(spec: MetricSpec, value: float) -> HealCondition:
    return HealCondition(metric=spec.name, min=value)


def _plan(steps: Sequence[str], *clear_when: HealCondition) -> HealPlan:
    return HealPlan(steps=list(steps), clear_when=list(clear_when))


_OPCACHE_STEPS = ("opcache.invalidate", "opcache.reset")  # drop what is known stale, then everything
# What lives in shared memory and goes with a reset (and with a restart).
_SHARED_MEMORY = (OPCACHE_SCRIPTS_STALE, OPCACHE_SCRIPTS_SUSPECT, OPCACHE_SCRIPTS_MISSING,
                  OPCACHE_SCRIPTS_OUTSIDE_RELEASE, CODE_REVISION_DRIFT)


def _cache_plan(cache: str, config_keys: bool = False) -> HealPlan:
    """laravel.cache_rebuild of this bootstrap cache (its `cache` argument: only that one is rebuilt),
    cleared once it is neither stale nor half-written."""
    conditions = [at_most(spec, cache=cache) for spec in (CACHE_STALE, CACHE_UNPARSABLE)]
    if config_keys:
        conditions.append(at_most(CONFIG_KEYS_DIFFERING))
    return HealPlan(steps=["laravel.cache_rebuild"], clear_when=conditions, args={"cache": cache})


DEFAULT_PLANS: dict[str, HealPlan] = {
    "CachewardenViewsStale": _plan(["views.recompile"], at_most(VIEWS_STALE)),
    "CachewardenViewsOrphaned": _plan(["views.remove_orphans"], at_most(VIEWS_ORPHANED)),
    "CachewardenViewsUncompiled": _plan(["views.recompile"], at_most(VIEWS_UNCOMPILED)),
    "CachewardenViewsDirNotWritable": _plan(["views.fix_permissions"], at_least(VIEWS_DIR_WRITABLE, 1)),
    "CachewardenOpcacheStaleScripts": _plan(_OPCACHE_STEPS, at_most(OPCACHE_SCRIPTS_STALE)),
    "CachewardenOpcacheMissingScripts": _plan(_OPCACHE_STEPS, at_most(OPCACHE_SCRIPTS_MISSING)),
    "CachewardenCodeRevisionDrift": _plan(_OPCACHE_STEPS, at_most(CODE_REVISION_DRIFT)),
    # Invalidation drops the scripts from memory and their entries; a purge removes entries it could not.
    "CachewardenOpcacheFileCacheStale": _plan(["opcache.invalidate", "opcache.purge_file_cache"],
                                              at_most(FILE_CACHE_STALE)),
    # A release switch (release_symlink) that OPcache did not follow: its cached scripts are keyed by the
    # path through the symlink, so the old release is served until they go. Only a reset drops them
    # from the listing (see names.py); each worker then clears its realpath cache as it sees the reset,
    # so `current` is resolved afresh and the new release compiled (tests/integration/test_heal_opcache.py).
    "CachewardenOpcacheOutsideRelease": _plan(["opcache.reset"],
                                              at_most(OPCACHE_SCRIPTS_OUTSIDE_RELEASE)),
    # Only a restart replaces preloaded code: without php_fpm[].restart_command the run stops at once.
    "CachewardenOpcachePreloadStale": _plan(["fpm.reload"], at_most(PRELOAD_STALE)),
    "CachewardenLaravelConfigStale": _cache_plan("config", config_keys=True),
    "CachewardenLaravelRoutesStale": _cache_plan("routes"),
    "CachewardenLaravelPackagesStale": _cache_plan("packages"),
}

# What a manual run of a single action is verified against: every metric the action can clear
# (exporter.heal.names, kept in step by tests/unit/test_heal_plans.py) and ALSO_CHECKED, so that it is never
# `already_healthy` while a finding it exists for is there. A metric the target never reports (no
# release_symlink, no file cache, no revision file) does not apply to it (`applicable`).
# cache.warm has no collector and is verified by its own result.
ACTION_CONDITIONS: dict[str, HealPlan] = {
    "views.remove_orphans": DEFAULT_PLANS["CachewardenViewsOrphaned"],
    "views.recompile": _plan(["views.recompile"], at_most(VIEWS_STALE), at_most(VIEWS_UNCOMPILED)),
    "views.fix_permissions": DEFAULT_PLANS["CachewardenViewsDirNotWritable"],
    # Not scripts_missing: a file that is gone cannot be invalidated (the reset's job). Scripts of a
    # superseded release it cannot clear either (names.py), yet a run must not call a pool that serves
    # one healthy: it ends `not_clearable`, naming the metric, before it runs (ALSO_CHECKED).
    "opcache.invalidate": _plan(["opcache.invalidate"], *map(at_most, (
        OPCACHE_SCRIPTS_STALE, OPCACHE_SCRIPTS_SUSPECT, OPCACHE_SCRIPTS_OUTSIDE_RELEASE, CODE_REVISION_DRIFT,
        FILE_CACHE_STALE, FILE_CACHE_SUSPECT, FILE_CACHE_OUTSIDE_RELEASE))),
    "opcache.reset": _plan(["opcache.reset"], *map(at_most, _SHARED_MEMORY)),
    "opcache.purge_file_cache": _plan(["opcache.purge_file_cache"], *map(at_most, (
        FILE_CACHE_STALE, FILE_CACHE_SUSPECT, FILE_CACHE_ORPHANED, FILE_CACHE_OUTSIDE_RELEASE))),
    "fpm.reload": _plan(["fpm.reload"], *map(at_most, (PRELOAD_STALE, *_SHARED_MEMORY))),
    "laravel.cache_rebuild": _plan(["laravel.cache_rebuild"], *map(at_most, (
        CACHE_STALE, CACHE_UNPARSABLE, CACHE_SERVED_STALE))),
}

# The conditions of a manual run beyond what its action can clear (see above).
ALSO_CHECKED: dict[str, frozenset[str]] = {
    "opcache.invalidate": frozenset({OPCACHE_SCRIPTS_OUTSIDE_RELEASE.name}),
}
# What an action can clear and a manual run of it is not held to. A config key may differ by design
# from what the sidecar computes (a value read from the environment or the account that builds it):
# the CachewardenLaravelConfigStale plan checks it, a manual rebuild is verified on the caches alone.
NOT_CHECKED: dict[str, frozenset[str]] = {
    "laravel.cache_rebuild": frozenset({CONFIG_KEYS_DIFFERING.name}),
}


def action_conditions(action: str, args: Mapping[str, str]) -> list[HealCondition]:
    """What a manual run of `action` with `args` is verified against: ACTION_CONDITIONS, held to the
    series of the caches a named `cache` of laravel.cache_rebuild rebuilds (the others are not its job)."""
    plan = ACTION_CONDITIONS.get(action)
    if plan is None:
        return []
    cache = args.get("cache", ALL) if action == "laravel.cache_rebuild" else ALL
    if cache == ALL:
        return plan.clear_when
    return [c.model_copy(update={"labels": {**c.labels, "cache": file}})
            for file in NAMED[cache] for c in plan.clear_when]


def applicable(conditions: Sequence[HealCondition], observation: Observation | None) -> list[HealCondition]:
    """The conditions of a manual run that apply to a target, judged by its measurement before the run:
    those on metrics it reported. Unmeasured (no observation, or none of them reported): all of them,
    so that a run is never verified, or already healthy, on nothing."""
    if observation is None:
        return list(conditions)
    measured = [c for c in conditions if metric_sum(observation, c.metric, c.labels) is not None]
    return measured or list(conditions)


def resolve_plans(heal: HealConfig) -> dict[str, HealPlan]:
    return {**DEFAULT_PLANS, **heal.plans}


def metric_sum(observation: Observation, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The sum of every series of one metric in a collection (those with `labels` only, if given), or
    None if none was recorded."""
    values = [v for spec, label_values, v in observation.samples.values if spec.name == name
              and all(k in spec.labels and label_values[1 + spec.labels.index(k)] == want
                      for k, want in (labels or {}).items())]
    return sum(values) if values else None


def cleared(conditions: Sequence[HealCondition], observation: Observation | None) -> bool:
    """True when every condition holds in `observation`; an unmeasured metric never counts as cleared."""
    if observation is None:
        return False
    for cond in conditions:
        value = metric_sum(observation, cond.metric, cond.labels)
        if value is None:
            return False
        if cond.max is not None and value > cond.max:
            return False
        if cond.min is not None and value < cond.min:
            return False
    return True


def unmet_metrics(conditions: Sequence[HealCondition], observation: Observation) -> list[str]:
    """The metrics of conditions that were measured and do not hold (unmeasured ones say nothing)."""
    out = []
    for cond in conditions:
        value = metric_sum(observation, cond.metric, cond.labels)
        if value is not None and ((cond.max is not None and value > cond.max) or (
                cond.min is not None and value < cond.min)):
            out.append(cond.metric)
    return out


def unmet(conditions: Sequence[HealCondition], observation: Observation | None) -> list[str]:
    """The conditions that do not hold, as `metric=value` texts for the run record."""
    out = []
    for cond in conditions:
        value = metric_sum(observation, cond.metric, cond.labels) if observation else None
        if value is None or (cond.max is not None and value > cond.max) or (
            cond.min is not None and value < cond.min
        ):
            out.append(f"{cond.metric}={'unmeasured' if value is None else f'{value:g}'}")
    return out
