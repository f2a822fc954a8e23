"""What the heal relies on is decided at load: plan metrics that can clear, where compiled_path came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.collectors import emitted_metrics
from exporter.config import ConfigError, parse
from exporter.heal.actions.safety import UnsafeTarget, check_compiled_dir
from exporter.heal.names import ACTIONS
from exporter.heal.plans import ACTION_CONDITIONS, DEFAULT_PLANS
from tests.support.healing import compiled_dir, make_app_dir


def test_a_clear_when_metric_its_collector_does_not_emit_is_a_config_error_with_its_path() -> None:
    # It used to load, and the plan could never clear: `cachewarden_views_stal` is never measured.
    with pytest.raises(ConfigError) as raised:
        parse({"heal": {"plans": {"ShopViews": {
            "steps": ["views.recompile"],
            "clear_when": [{"metric": "cachewarden_views_uncompiled", "max": 0},
                           {"metric": "cachewarden_views_stal", "max": 0},
                           {"metric": "cachewarden_opcache_scripts_stale", "max": 0}]}}}})
    assert raised.value.problems == [
        "heal.plans.ShopViews.clear_when[1].metric: the views collector that re-measures views.recompile "
        "emits no metric 'cachewarden_views_stal'; did you mean 'cachewarden_views_stale'?",
        "heal.plans.ShopViews.clear_when[2].metric: the views collector that re-measures views.recompile "
        "emits no metric 'cachewarden_opcache_scripts_stale'",
    ]


def test_every_shipped_plan_is_verified_by_metrics_its_collector_emits() -> None:
    for plan in (*DEFAULT_PLANS.values(), *ACTION_CONDITIONS.values()):
        kind = ACTIONS[plan.steps[0]].measures
        assert kind is not None
        assert {c.metric for c in plan.clear_when} <= emitted_metrics(kind)


def test_where_compiled_path_came_from_is_recorded_once_and_the_safety_gate_trusts_it(tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    elsewhere = tmp_path / "compiled"
    elsewhere.mkdir()

    def app(**laravel: str) -> dict[str, object]:
        return {"laravel": [{"name": "shop", "root": str(root), **laravel}]}

    derived = parse(app()).laravel[0]
    assert derived.compiled_path_configured is False
    # The derived value written out in the file is still the derived one: the stricter checks apply.
    same = parse(app(compiled_path=str(compiled_dir(root)))).laravel[0]
    assert same.compiled_path_configured is False
    operator = parse(app(compiled_path=str(elsewhere))).laravel[0]
    assert operator.compiled_path_configured is True
    assert check_compiled_dir(operator) == elsewhere.resolve()
    # Only the record decides: the same directory, not recorded as the operator's, is outside the root.
    with pytest.raises(UnsafeTarget, match="lies outside the app root"):
        check_compiled_dir(operator.model_copy(update={"compiled_path_configured": False}))
