"""The heal's plans against what its actions declare (exporter/heal/names.py): they cannot drift apart.

A manual run of an action is verified against ACTION_CONDITIONS; an action that can clear a metric its
conditions leave out answers `already_healthy` for that very finding and changes nothing.
"""

from __future__ import annotations

import pytest

from exporter.collectors import all_metric_specs
from exporter.collectors.base import Observation
from exporter.config import HealCondition
from exporter.heal.names import ACTIONS
from exporter.heal.plans import ACTION_CONDITIONS, ALSO_CHECKED, DEFAULT_PLANS, NOT_CHECKED, applicable
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
