"""`cachewarden render`: the checked-in rules and dashboards, and how thresholds reach both."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import exporter
from exporter.cli import EXIT_BAD_CONFIG, EXIT_OK, main
from exporter.collectors import all_metric_specs
from exporter.config import ALERT_DEFAULTS, ALERTS_WITHOUT_THRESHOLD, AlertRule, AlertsConfig, parse
from exporter.metrics import MetricSpec
from exporter.render import render_all, stale_files, write_files
from exporter.render.dashboards import panel_queries
from exporter.render.thresholds import prometheus_duration, promql_number

ROOT = Path(__file__).resolve().parents[2]
RERENDER = "the checked-in files differ from a fresh render: run `cachewarden render` and commit the result"

# Alerts the heal plans are keyed by: renaming one silently disconnects its plan.
HEAL_PLAN_ALERTS = {
    "CachewardenViewsStale", "CachewardenViewsOrphaned", "CachewardenViewsUncompiled",
    "CachewardenViewsDirNotWritable", "CachewardenOpcacheStaleScripts", "CachewardenOpcacheMissingScripts",
    "CachewardenCodeRevisionDrift", "CachewardenLaravelConfigStale", "CachewardenLaravelRoutesStale",
    "CachewardenLaravelPackagesStale", "CachewardenOpcacheOutsideRelease",
}
# Series names a query may use: metrics cachewarden exposes, recording rules, and Prometheus' own.
METRIC = re.compile(r"(?<![\w:])cachewarden_[a-z0-9_]+(?![\w:])")
RECORDED = re.compile(r"\b[a-z_]+:cachewarden_[a-z0-9_]+:[a-z0-9_]+\b")


def declared_metric_names() -> set[str]:
    """Every MetricSpec constant in the package, wherever it is declared (collectors, scheduler, heal)."""
    names = {s.name for s in all_metric_specs()}
    for info in pkgutil.walk_packages(exporter.__path__, "exporter."):
        if info.name.endswith("__main__"):  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        names.update(v.name for v in vars(module).values() if isinstance(v, MetricSpec))
    return names


def rendered(alerts: AlertsConfig | None = None) -> dict[str, str]:
    return {str(f.path): f.text for f in render_all(alerts or AlertsConfig())}


def rule_groups(files: dict[str, str]) -> list[dict[str, Any]]:
    return [g for path, text in files.items() if path.startswith("alerts/")
            for g in yaml.safe_load(text)["groups"]]


def alerting_rules(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_groups(files) for r in g["rules"] if "alert" in r}


def dashboards(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {path: json.loads(text) for path, text in files.items() if path.startswith("grafana/")}


def test_checked_in_rules_and_dashboards_match_a_fresh_render() -> None:
    stale = stale_files(render_all(AlertsConfig()), ROOT)
    assert not stale, f"{RERENDER}: {[str(p) for p in stale]}"


def test_every_configured_alert_is_rendered_and_every_rendered_alert_is_configurable() -> None:
    assert set(alerting_rules(rendered())) == set(ALERT_DEFAULTS)
    assert set(ALERT_DEFAULTS) >= HEAL_PLAN_ALERTS


def test_each_rule_file_holds_one_group_and_group_names_are_unique() -> None:
    files = rendered()
    groups = rule_groups(files)
    assert len(groups) == sum(1 for p in files if p.startswith("alerts/"))
    assert len({g["name"] for g in groups}) == len(groups)


@pytest.mark.parametrize("name", sorted(ALERT_DEFAULTS))
def test_alert_has_for_severity_annotations_and_a_runbook_in_the_repo(name: str) -> None:
    rule = alerting_rules(rendered())[name]
    assert re.fullmatch(r"Cachewarden[A-Z][A-Za-z]+", name)
    assert rule["for"] == prometheus_duration(ALERT_DEFAULTS[name].for_)
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    notes = rule["annotations"]
    # CachewardenDown reads Prometheus' own `up`, which names the scraped instance, not a target.
    label = "$labels.instance" if name == "CachewardenDown" else "{{ $labels.target }}"
    assert label in notes["summary"] + notes["description"]
    assert notes["runbook_url"].endswith(f"/docs/runbooks/{name}.md")
    runbook = ROOT / "docs" / "runbooks" / f"{name}.md"
    assert runbook.is_file(), f"missing runbook {runbook.relative_to(ROOT)}"
    text = runbook.read_text(encoding="utf-8")
    for section in ("## Meaning", "## Confirm", "## What /heal does", "## When /heal does not fix it"):
        assert section in text, f"{runbook.name} lacks a {section!r} section"


# Alerts on a 0/1 flag: their value says nothing the summary does not.
FLAG_ALERTS = ALERTS_WITHOUT_THRESHOLD | {"CachewardenCodeRevisionDrift", "CachewardenHealIneffective"}


def test_alerts_that_measure_an_amount_print_it() -> None:
    for name, rule in alerting_rules(rendered()).items():
        if name not in FLAG_ALERTS:
            assert "$value" in rule["annotations"]["description"], name


def test_a_changed_threshold_reaches_the_alert_and_the_panels_that_show_it() -> None:
    alerts = parse({"alerts": {"rules": {"CachewardenRedisHitRatioLow": {"threshold": 0.95}}}}).alerts
    files = rendered(alerts)
    assert "keyspace_hit_ratio:rate5m < 0.95" in alerting_rules(files)["CachewardenRedisHitRatioLow"]["expr"]
    steps = [
        p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        for d in dashboards(files).values() for p in d["panels"]
        if any("keyspace_hit_ratio" in t["expr"] for t in p.get("targets", []))
    ]
    assert len(steps) >= 2, "the overview and the Redis dashboard both show the hit ratio"
    assert all(s == [{"color": "red", "value": None}, {"color": "green", "value": 0.95}] for s in steps)
    # Nothing else moved: the other alerts keep their defaults.
    default_rules = alerting_rules(rendered())
    changed = {n for n, r in alerting_rules(files).items() if r != default_rules[n]}
    assert changed == {"CachewardenRedisHitRatioLow"}


def test_a_count_panel_turns_red_exactly_where_the_count_alert_fires() -> None:
    alerts = parse({"alerts": {"rules": {"CachewardenViewsStale": {"threshold": 4}}}}).alerts
    overview = dashboards(rendered(alerts))["grafana/dashboards/cachewarden-overview.json"]
    panel = next(p for p in overview["panels"] if p["title"] == "Stale views")
    # The alert fires for stale > 4, and Grafana paints a value red once it reaches the step.
    assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1] == {"color": "red", "value": 5}


def test_short_for_durations_from_a_test_config_reach_every_alert() -> None:
    alerts = parse({"alerts": {"rules": {n: {"for": "1s"} for n in ALERT_DEFAULTS}}}).alerts
    assert {r["for"] for r in alerting_rules(rendered(alerts)).values()} == {"1s"}


def test_runbook_base_url_is_configurable() -> None:
    alerts = parse({"alerts": {"runbook_base_url": "https://wiki.example.com/rb/"}}).alerts
    urls = {r["annotations"]["runbook_url"] for r in alerting_rules(rendered(alerts)).values()}
    assert urls == {f"https://wiki.example.com/rb/{n}.md" for n in ALERT_DEFAULTS}


@pytest.mark.parametrize("name", sorted(ALERTS_WITHOUT_THRESHOLD))
def test_a_threshold_on_an_alert_that_uses_none_is_refused_by_path(name: str) -> None:
    with pytest.raises(Exception, match=rf"alerts\.rules: {name}\.threshold: .*remove the key"):
        parse({"alerts": {"rules": {name: {"threshold": 3}}}})


def test_exactly_the_alerts_declared_without_threshold_ignore_it() -> None:
    # Bypasses validation on purpose: shows which expressions a threshold would really change.
    odd = {n: AlertRule.model_validate({**r.model_dump(by_alias=True), "threshold": 1234.5})
           for n, r in ALERT_DEFAULTS.items()}
    changed = alerting_rules(rendered(AlertsConfig.model_construct(
        runbook_base_url=AlertsConfig().runbook_base_url, min_lookup_rate=1.0, job="cachewarden", rules=odd)))
    defaults = alerting_rules(rendered())
    ignoring = {n for n in ALERT_DEFAULTS if changed[n]["expr"] == defaults[n]["expr"]}
    assert ignoring == ALERTS_WITHOUT_THRESHOLD


def test_the_scrape_job_reaches_the_cachewarden_down_alert_as_a_promql_string() -> None:
    alerts = parse({"alerts": {"job": 'cw-.*|side"car'}}).alerts
    expr = alerting_rules(rendered(alerts))["CachewardenDown"]["expr"]
    assert expr == 'up{job=~"cw-.*|side\\"car"} == 0 or absent(up{job=~"cw-.*|side\\"car"})'


def test_hit_ratios_are_recorded_only_above_the_minimum_lookup_rate() -> None:
    files = rendered(parse({"alerts": {"min_lookup_rate": 2.5}}).alerts)
    records = {r["record"]: r["expr"] for g in rule_groups(files) for r in g["rules"] if "record" in r}
    for name in (
        "target:cachewarden_opcache_hit_ratio:rate5m", "target:cachewarden_redis_keyspace_hit_ratio:rate5m",
    ):
        assert records[name].endswith("> 2.5"), records[name]


def test_unknown_alert_names_in_the_config_are_reported_by_path() -> None:
    with pytest.raises(Exception, match=r"alerts\.rules: unknown alert 'CachewardenViewStale'"):
        parse({"alerts": {"rules": {"CachewardenViewStale": {"for": "1m"}}}})


def test_queries_use_only_declared_metrics_and_defined_recording_rules() -> None:
    files = rendered()
    declared = declared_metric_names()
    recorded = {r["record"] for g in rule_groups(files) for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rule_groups(files) for r in g["rules"]]
    for d in dashboards(files).values():
        exprs.extend(e for _, e in panel_queries(d))
        exprs.extend(a["expr"] for a in d["annotations"]["list"] if "expr" in a)
        exprs.extend(v["definition"] for v in d["templating"]["list"] if "definition" in v)
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used - declared == set(), "queries name metrics no collector declares"
    assert {m for e in exprs for m in RECORDED.findall(e)} <= recorded
    for name in recorded:
        assert re.fullmatch(r"[a-z_]+:cachewarden_[a-z0-9_]+:[a-z0-9_]+", name), name


def test_dashboards_have_stable_uids_variables_units_and_heal_and_deploy_annotations() -> None:
    boards = dashboards(rendered())
    assert {d["uid"] for d in boards.values()} == {
        "cachewarden-overview", "cachewarden-views", "cachewarden-opcache", "cachewarden-fpm",
        "cachewarden-redis", "cachewarden-sql", "cachewarden-self", "cachewarden-laravel",
    }
    for path, d in boards.items():
        assert path == f"grafana/dashboards/{d['uid']}.json"
        assert [v["name"] for v in d["templating"]["list"]] == ["datasource", "job", "target"]
        heal = [a for a in d["annotations"]["list"] if a.get("name") == "Heal runs"]
        assert heal, f"{d['uid']} has no heal-run annotations"
        assert "cachewarden_heal_runs_total" in heal[0]["expr"]
        deploys = [a for a in d["annotations"]["list"] if a.get("name") == "Deploys"]
        assert deploys, f"{d['uid']} has no deploy annotations"
        assert "cachewarden_deploy_runs_total" in deploys[0]["expr"]
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            assert p["fieldConfig"]["defaults"]["unit"], f"{d['uid']}/{p['title']} has no unit"
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all('job=~"$job"' in t["expr"] for t in p["targets"]), f"{d['uid']}/{p['title']}"


def test_overview_has_one_row_per_subsystem() -> None:
    overview = dashboards(rendered())["grafana/dashboards/cachewarden-overview.json"]
    rows = [p["title"] for p in overview["panels"] if p["type"] == "row"]
    assert rows == ["Compiled views", "OPcache", "Laravel bootstrap caches", "PHP-FPM", "Redis", "Databases",
                    "cachewarden"]


def test_every_alert_is_tested_by_promtool_firing_and_not_firing() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    tested_files: set[str] = set()
    for test_file in sorted((ROOT / "alerts" / "tests").glob("*.yaml")):
        doc = yaml.safe_load(test_file.read_text(encoding="utf-8"))
        tested_files.update(Path(f).name for f in doc["rule_files"])
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    shipped = set(alerting_rules(rendered()))
    assert shipped - fires == set(), "alerts with no promtool case where they fire"
    assert shipped - silent == set(), "alerts with no promtool case where they stay silent"
    assert shipped - pending_inside_for() == set(), "alerts with no promtool case inside their `for:`"
    assert tested_files == {p.name for p in (ROOT / "alerts").glob("*.yml")}


def pending_inside_for() -> set[str]:
    """Alerts with a promtool eval that expects no alert at a time their ALERTS series is pending."""
    covered: set[str] = set()
    for test_file in sorted((ROOT / "alerts" / "tests").glob("*.yaml")):
        for case in yaml.safe_load(test_file.read_text(encoding="utf-8"))["tests"]:
            quiet = {(c["alertname"], c["eval_time"]) for c in case.get("alert_rule_test", [])
                     if not c.get("exp_alerts")}
            for check in case.get("promql_expr_test", []):
                m = re.fullmatch(r'ALERTS\{alertname="(\w+)", alertstate="pending"\}', check["expr"])
                if m and check["exp_samples"] and (m.group(1), check["eval_time"]) in quiet:
                    covered.add(m.group(1))
    return covered


@pytest.mark.parametrize(("seconds", "text"), [
    (300, "5m"), (3600, "1h"), (5400, "90m"), (1, "1s"), (1.5, "1500ms"), (0.25, "250ms"), (86400, "24h"),
])
def test_durations_print_in_their_largest_exact_unit(seconds: float, text: str) -> None:
    assert prometheus_duration(seconds) == text


@pytest.mark.parametrize(("value", "text"), [(0.0, "0"), (1 << 30, "1073741824"), (0.8, "0.8"), (-1.0, "-1")])
def test_thresholds_print_as_exact_promql_numbers(value: float, text: str) -> None:
    assert promql_number(float(value)) == text


def test_write_files_rewrites_only_what_changed(tmp_path: Path) -> None:
    files = render_all(AlertsConfig())
    assert len(write_files(files, tmp_path)) == len(files)
    target = tmp_path / "alerts" / "views.yml"
    target.write_text("edited by hand\n", encoding="utf-8")
    assert write_files(files, tmp_path) == [target]
    assert stale_files(files, tmp_path) == []


def test_render_command_writes_rules_and_dashboards_for_the_configured_thresholds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cachewarden.yaml"
    config.write_text("alerts:\n  rules:\n    CachewardenViewsStale: {for: 30s, threshold: 2}\n")
    assert main(["render", "--config.file", str(config), "--output-dir", str(tmp_path / "out")]) == EXIT_OK
    views = yaml.safe_load((tmp_path / "out" / "alerts" / "views.yml").read_text())
    stale = next(r for r in views["groups"][0]["rules"] if r.get("alert") == "CachewardenViewsStale")
    assert (stale["expr"], stale["for"]) == ("cachewarden_views_stale > 2", "30s")
    assert (tmp_path / "out" / "grafana" / "dashboards" / "cachewarden-overview.json").is_file()
    assert "wrote" in capsys.readouterr().out


def test_render_command_without_a_config_uses_the_defaults(tmp_path: Path) -> None:
    assert main(["render", "--output-dir", str(tmp_path)]) == EXIT_OK
    assert stale_files(render_all(AlertsConfig()), tmp_path) == []


def test_render_command_rejects_a_bad_threshold_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cachewarden.yaml"
    config.write_text("alerts:\n  rules:\n    CachewardenViewsStale: {for: soon}\n")
    assert main(["render", "--config.file", str(config), "--output-dir", str(tmp_path)]) == EXIT_BAD_CONFIG
    assert "alerts.rules.CachewardenViewsStale.for" in capsys.readouterr().err
    assert not (tmp_path / "alerts").exists()
