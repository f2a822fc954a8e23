"""Grafana dashboard JSON from the short panel lists the dashboard templates render.

A template says what matters (queries, units, where red starts); this module adds what every dashboard
shares and nobody should hand-edit: layout, ids, the datasource/job/target variables and the heal-run
annotations. That keeps every dashboard's plumbing identical and the templates readable.

Hand-written rather than built with Grafana's Python SDK (grafana-foundation-sdk): its typed models
have no place for the Prometheus fields of an annotation query (step, titleFormat, textFormat, tagKeys,
useValueForTime), which Grafana's own schema leaves open to the datasource and which title and tag
the heal-run annotations, nor for a variable's `definition`; built through the SDK, those would be
lost. The SDK checks the output instead: tests/unit/test_shipped_artefacts.py holds every rendered
dashboard to its dashboard schema (only keys it defines, besides those, with the types it defines).
"""

from __future__ import annotations

from typing import Any

GRID_WIDTH = 24
PANEL_WIDTH = {"stat": 4, "timeseries": 12, "table": 24}
PANEL_HEIGHT = {"stat": 5, "timeseries": 8, "table": 8}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39

# Heal runs mark the graphs: an increase of the counter is a run that ended in that minute.
HEAL_ANNOTATION_EXPR = (
    'sum by (action, target, result) (changes(cachewarden_heal_runs_total{job=~"$job"}[1m])) > 0'
)
# Deploys too, whatever the dashboard: a deploy is the first suspect for any change on it.
DEPLOY_ANNOTATION_EXPR = (
    'sum by (target, result) (changes(cachewarden_deploy_runs_total{job=~"$job"}[1m])) > 0'
)


def build_dashboard(spec: dict[str, Any]) -> dict[str, Any]:
    """The full dashboard for one rendered spec (uid, title, target_metric, rows of panels)."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in spec["rows"]:
        panels.append({
            "type": "row", "id": next_id, "title": row["title"], "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1}, "panels": [],
        })
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row["panels"]:
            kind = panel.get("type", "timeseries")
            w = panel.get("width", PANEL_WIDTH[kind])
            h = PANEL_HEIGHT[kind]
            if x + w > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel(panel, kind, next_id, {"x": x, "y": y, "w": w, "h": h}))
            next_id += 1
            x += w
            row_height = max(row_height, h)
        y += row_height
    return {
        "uid": spec["uid"],
        "title": spec["title"],
        "description": spec.get("description", ""),
        "tags": ["cachewarden", *spec.get("tags", [])],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "links": [
            {"title": "cachewarden", "type": "dashboards", "tags": ["cachewarden"], "asDropdown": True},
        ],
        "templating": {"list": _variables(spec["target_metric"])},
        "annotations": {"list": _annotations()},
        "panels": panels,
    }


def _panel(spec: dict[str, Any], kind: str, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    queries = spec.get("queries") or [{"expr": spec["expr"], "legend": spec.get("legend", "{{target}}")}]
    targets = [
        {
            "refId": chr(ord("A") + i),
            "datasource": DATASOURCE,
            "expr": q["expr"],
            "legendFormat": q.get("legend", "{{target}}"),
            **({"instant": True, "format": "table"} if kind == "table" else {"range": True}),
        }
        for i, q in enumerate(queries)
    ]
    defaults: dict[str, Any] = {
        "unit": spec.get("unit", "short"),
        "thresholds": {"mode": "absolute", "steps": _steps(spec)},
        "color": {"mode": "thresholds" if kind == "stat" else "palette-classic"},
    }
    if "decimals" in spec:
        defaults["decimals"] = spec["decimals"]
    if "min" in spec:
        defaults["min"] = spec["min"]
    if "max" in spec:
        defaults["max"] = spec["max"]
    options: dict[str, Any] = {}
    if kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
            "justifyMode": "auto", "orientation": "auto",
        }
    elif kind == "timeseries":
        has_threshold = "red_above" in spec or "red_below" in spec
        defaults["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
            "spanNulls": False,
            "thresholdsStyle": {"mode": "line+area" if has_threshold else "off"},
        }
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "table":
        options = {"showHeader": True, "cellHeight": "sm"}
    return {
        "type": kind,
        "id": panel_id,
        "title": spec["title"],
        "description": spec.get("description", ""),
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        **({"transformations": [{"id": "merge", "options": {}}]} if kind == "table" else {}),
    }


def _steps(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Grafana colours a value by the last step it reaches (value >= step), so red starts at the
    first value for which the alert's comparison holds."""
    if "red_above" in spec:
        return [{"color": "green", "value": None}, {"color": "red", "value": _number(spec["red_above"])}]
    if "red_below" in spec:
        return [{"color": "red", "value": None}, {"color": "green", "value": _number(spec["red_below"])}]
    return [{"color": "green", "value": None}]


def _number(value: Any) -> float | int:
    # YAML 1.1 reads `5e-324` (no dot) as a string; the template printed a number, so make it one.
    number = float(value)
    return int(number) if number.is_integer() else number


def _variables(target_metric: str) -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-variable"}, "definition": query,
            "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".+",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        }

    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "refresh": 1, "current": {}},
        query_var("job", "Job", "label_values(cachewarden_build_info, job)"),
        query_var("target", "Target", f'label_values({target_metric}{{job=~"$job"}}, target)'),
    ]


def _annotations() -> list[dict[str, Any]]:
    return [
        {
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
            "type": "dashboard",
        },
        {
            "name": "Heal runs", "datasource": DATASOURCE, "enable": True, "iconColor": "orange",
            "expr": HEAL_ANNOTATION_EXPR, "step": "1m", "titleFormat": "heal {{action}}: {{result}}",
            "textFormat": "target {{target}}", "tagKeys": "action,result,target",
            "useValueForTime": False,
        },
        {
            "name": "Deploys", "datasource": DATASOURCE, "enable": True, "iconColor": "purple",
            "expr": DEPLOY_ANNOTATION_EXPR, "step": "1m", "titleFormat": "deploy {{target}}: {{result}}",
            "textFormat": "cachewarden deploy", "tagKeys": "result,target", "useValueForTime": False,
        },
    ]


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) of every query a dashboard's panels run."""
    return [
        (p["title"], t["expr"])
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    ]
