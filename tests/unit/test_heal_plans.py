"""The heal's plans against what its actions declare (exporter/heal/names.py): they cannot drift apart.

A manual run of an action is verified against ACTION_CONDITIONS; an action that can clear a metric its
conditions leave out answers `already_healthy` for that very finding and changes nothing.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from exporter.collectors import all_metric_specs
from exporter.collectors.base import Observation
from exporter.config import HealCondition, HealPlan
from exporter.heal.names import ACTIONS, check_args, operation
from exporter.heal.plans import (
    ACTION_CONDITIONS,
    ALSO_CHECKED,
    DEFAULT_PLANS,
    NOT_CHECKED,
    action_conditions,
    applicable,
)
from exporter.metrics import MetricSpec, Samples, gauge

MEASURED = [name for name, info in ACTIONS.items() if info.measures is not None]


@pytest.mark.parametrize("action", MEASURED)
def test_a_manual_run_checks_every_metric_its_action_can_clear_and_only_the_declared_others(
        action: str) -> None:
    conditions = {c.metric for c in ACTION_CONDITIONS[action].clear_when}
    also, exempt = ALSO_CHECKED.get(action, frozenset()), NOT_CHECKED.get(action, frozenset())

    assert conditions == (ACTIONS[action].clears - exempt) | also
    assert not ACTIONS[action].clears & also
    assert exempt <= ACTIONS[action].clears


def test_an_action_without_a_collector_has_no_conditions() -> None:
    unmeasured = {name for name, info in ACTIONS.items() if info.measures is None}

    assert unmeasured == {"cache.warm"}
    assert not unmeasured & set(ACTION_CONDITIONS)


@pytest.mark.parametrize("alert", sorted(DEFAULT_PLANS))
def test_every_condition_of_a_shipped_plan_is_cleared_by_one_of_its_steps(alert: str) -> None:
    plan = DEFAULT_PLANS[alert]
    clearable = set().union(*(ACTIONS[step].clears for step in plan.steps))

    assert {c.metric for c in plan.clear_when} <= clearable


def test_every_metric_an_action_claims_to_clear_is_one_cachewarden_exports() -> None:
    exported = {spec.name for spec in all_metric_specs()}
    claimed = set().union(*(info.clears for info in ACTIONS.values()))

    assert claimed - exported == set()


STALE = gauge("cachewarden_opcache_scripts_stale", "test")
OUTSIDE = gauge("cachewarden_opcache_scripts_outside_release", "test")
CONDITIONS = [HealCondition(metric=STALE.name, max=0), HealCondition(metric=OUTSIDE.name, max=0)]


def observed(*specs_and_values: tuple[MetricSpec, float]) -> Observation:
    s = Samples("www")
    for spec, value in specs_and_values:
        s.add(spec, value)
    return Observation(s)


def test_a_metric_the_target_does_not_report_does_not_apply_to_it() -> None:
    # No release_symlink: cachewarden_opcache_scripts_outside_release is absent, not 0.
    assert applicable(CONDITIONS, observed((STALE, 0))) == CONDITIONS[:1]
    assert applicable(CONDITIONS, observed((STALE, 0), (OUTSIDE, 2))) == CONDITIONS


def test_with_nothing_measured_every_condition_applies() -> None:
    assert applicable(CONDITIONS, None) == CONDITIONS
    assert applicable(CONDITIONS, observed()) == CONDITIONS


@pytest.mark.parametrize(("alertname", "cache"), [("CachewardenLaravelConfigStale", "config"),
                                                  ("CachewardenLaravelRoutesStale", "routes"),
                                                  ("CachewardenLaravelPackagesStale", "packages")])
def test_each_bootstrap_cache_plan_rebuilds_its_own_cache_and_is_cleared_by_it(alertname: str,
                                                                             cache: str) -> None:
    plan = DEFAULT_PLANS[alertname]

    assert plan.args == {"cache": cache}
    assert {c.labels.get("cache") for c in plan.clear_when} - {None} == {cache}


@pytest.mark.parametrize(("plan", "error"), [
    ({"steps": ["laravel.cache_rebuild"], "args": {"cache": "route"}}, "cache='route': give one of"),
    ({"steps": ["views.recompile"], "args": {"cache": "routes"},
      "clear_when": [{"metric": "cachewarden_views_stale", "max": 0}]},
     "no step of ['views.recompile'] takes the argument 'cache'"),
    ({"steps": ["laravel.cache_rebuild"], "args": {"caches": "routes"}}, "takes the argument 'caches'"),
])
def test_a_plan_argument_no_step_takes_or_allows_is_a_configuration_error(plan: dict[str, Any],
                                                                         error: str) -> None:
    body = {"clear_when": [{"metric": "cachewarden_laravel_cache_stale", "max": 0}], **plan}

    with pytest.raises(ValidationError, match=re.escape(error)):
        HealPlan.model_validate(body)


@pytest.mark.parametrize(("args", "caches"), [({}, {None}), ({"cache": "all"}, {None}),
                                              ({"cache": "routes"}, {"routes"}),
                                              ({"cache": "packages"}, {"packages", "services"})])
def test_a_manual_rebuild_of_a_named_cache_is_verified_on_that_cache_alone(
        args: dict[str, str], caches: set[str | None]) -> None:
    conditions = action_conditions("laravel.cache_rebuild", args)

    assert {c.labels.get("cache") for c in conditions} == caches
    every = ACTION_CONDITIONS["laravel.cache_rebuild"].clear_when
    assert {c.metric for c in conditions} == {c.metric for c in every}


@pytest.mark.parametrize(("action", "args", "error"), [
    ("laravel.cache_rebuild", {"cache": "views"}, "laravel.cache_rebuild cache='views': give one of config"),
    ("laravel.cache_rebuild", {"target": "x"},
     "laravel.cache_rebuild takes no argument 'target'; it takes cache"),
    ("views.recompile", {"cache": "routes"}, "views.recompile takes no argument 'cache'"),
])
def test_an_argument_the_action_does_not_take_or_allow_is_named(action: str, args: dict[str, str],
                                                                 error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        check_args(action, args)
    check_args("laravel.cache_rebuild", {"cache": "events"})


def test_an_action_with_arguments_is_locked_and_cools_down_as_another_operation() -> None:
    assert operation("laravel.cache_rebuild", {}) == "laravel.cache_rebuild"
    assert operation("laravel.cache_rebuild", {"cache": "routes"}) == "laravel.cache_rebuild[cache=routes]"
    assert operation("laravel.cache_rebuild", {"cache": "routes"}) != \
        operation("laravel.cache_rebuild", {"cache": "config"})
    assert operation("views.recompile", {"cache": "routes"}) == "views.recompile"  # not its argument
