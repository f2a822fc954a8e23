"""README's metric reference table and the metric specs the code declares agree, in both directions."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from exporter.collectors import all_metric_specs
from exporter.metrics import MetricSpec, counter, gauge
from exporter.scheduler import SELF_METRICS

ROOT = Path(__file__).resolve().parents[2]
FIX = "regenerate it with: scripts/metric-table --write"


@pytest.fixture(scope="module")
def metric_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("metric_table", ROOT / "scripts" / "metric_table.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def by_name(rows: list[str]) -> dict[str, str]:
    out = {}
    for row in rows:
        m = re.match(r"^\| `([a-z0-9_]+)` \|", row)
        assert m, f"README metric table row is not in the generated form: {row!r}; {FIX}"
        out[m.group(1)] = row
    return out


def test_readme_lists_every_metric_the_code_declares_and_no_other(metric_table: ModuleType) -> None:
    documented = by_name(metric_table.readme_rows((ROOT / "README.md").read_text(encoding="utf-8")))
    declared = by_name(metric_table.render_rows(all_metric_specs()))

    missing = sorted(set(declared) - set(documented))
    gone = sorted(set(documented) - set(declared))
    changed = sorted(n for n in set(declared) & set(documented) if declared[n] != documented[n])
    problems = [f"{what}: {names}" for what, names in (
        ("missing from README.md", missing),
        ("in README.md but no longer declared by the code", gone),
        ("described differently in README.md than in the code", changed),
    ) if names]
    assert not problems, "; ".join(problems) + f"; {FIX}"


def test_every_collector_metric_and_the_self_metrics_are_registered() -> None:
    from exporter.collectors import collector_classes

    names = {s.name for s in all_metric_specs()}
    assert {s.name for s in SELF_METRICS} <= names
    for cls in collector_classes():
        assert {s.name for s in cls.metrics} <= names, cls.__name__


def test_table_rows_carry_type_labels_and_escaped_help(metric_table: ModuleType) -> None:
    specs = [counter("cachewarden_x_total", "A | B", ("state",)), gauge("cachewarden_a", "First.")]
    assert metric_table.render_rows(specs) == [
        "| `cachewarden_a` | gauge | `target` | First. |",
        "| `cachewarden_x_total` | counter | `target`, `state` | A \\| B |",
    ]


def test_rewrite_replaces_only_the_table_between_the_markers(metric_table: ModuleType) -> None:
    text = "intro\n<!-- metrics:start -->\n| old |\n<!-- metrics:end -->\noutro\n"
    specs: list[MetricSpec] = [gauge("cachewarden_a", "First.")]

    out = metric_table.rewrite(text, specs)

    assert out == ("intro\n<!-- metrics:start -->\n"
                   "| name | type | labels | help |\n| --- | --- | --- | --- |\n"
                   "| `cachewarden_a` | gauge | `target` | First. |\n"
                   "<!-- metrics:end -->\noutro\n")
    assert metric_table.readme_rows(out) == metric_table.render_rows(specs)
    assert metric_table.rewrite(out, specs) == out, "rewriting is idempotent"


def test_missing_markers_are_explained(metric_table: ModuleType) -> None:
    with pytest.raises(ValueError, match="metrics:start"):
        metric_table.readme_rows("no table here")


def test_the_same_name_declared_with_different_specs_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import exporter.collectors as collectors

    class One:
        metrics = (gauge("cachewarden_dup", "One meaning."),)

    class Other:
        metrics = (gauge("cachewarden_dup", "Another meaning."),)

    monkeypatch.setattr(collectors, "collector_classes", lambda: (One, Other))
    with pytest.raises(ValueError, match="cachewarden_dup is declared twice"):
        collectors.all_metric_specs()
