"""Renders the rule and dashboard templates with the configured thresholds, and compares or writes them.

The templates use `[[ ]]`/`[% %]` delimiters so that Prometheus' own `{{ $labels.target }}` and
Grafana's `{{target}}` pass through untouched. Every rendered file is parsed before it is returned: a
template that produces invalid YAML or JSON fails here, not in Prometheus or Grafana.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined

from exporter.config import AlertsConfig
from exporter.render.dashboards import build_dashboard
from exporter.render.thresholds import alert_thresholds, promql_number

RULE_GROUPS = ("views", "opcache", "laravel", "fpm", "redis", "sql", "cachewarden", "heal")
DASHBOARDS = ("overview", "views", "opcache", "laravel", "fpm", "redis", "sql", "cachewarden")

# Grafana variables every query filters on; a template writes `metric{[[ sel ]]}`.
SELECTOR = 'job=~"$job", target=~"$target"'

_HEADER = "# Rendered by `cachewarden render` from exporter/templates/{source}: edit that, not this file.\n"


@dataclass(frozen=True, slots=True)
class RenderedFile:
    path: Path  # relative to the output directory
    text: str


def _environment() -> Environment:
    return Environment(  # noqa: S701 - renders YAML, not HTML: escaping would corrupt PromQL
        loader=PackageLoader("exporter", "templates"),
        block_start_string="[%",
        block_end_string="%]",
        variable_start_string="[[",
        variable_end_string="]]",
        comment_start_string="[#",
        comment_end_string="#]",
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_all(alerts: AlertsConfig) -> list[RenderedFile]:
    """Every rule file (alerts/GROUP.yml) and dashboard (grafana/dashboards/UID.json)."""
    env = _environment()
    context: dict[str, Any] = {
        "rules": alert_thresholds(alerts),
        "min_lookup_rate": promql_number(alerts.min_lookup_rate),
        "sel": SELECTOR,
        # A PromQL string literal: JSON's escaping is a subset of PromQL's.
        "job": json.dumps(alerts.job),
    }
    out = [_render_rules(env, group, context) for group in RULE_GROUPS]
    out.extend(_render_dashboard(env, name, context) for name in DASHBOARDS)
    return out


def _render_rules(env: Environment, group: str, context: dict[str, Any]) -> RenderedFile:
    source = f"rules/{group}.yml.j2"
    text = _HEADER.format(source=source) + env.get_template(source).render(context)
    doc = yaml.safe_load(text)
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list) or len(groups) != 1:
        raise ValueError(f"{source}: a rule file holds exactly one group")
    return RenderedFile(Path("alerts") / f"{group}.yml", text)


def _render_dashboard(env: Environment, name: str, context: dict[str, Any]) -> RenderedFile:
    source = f"dashboards/{name}.yml.j2"
    spec = yaml.safe_load(env.get_template(source).render(context))
    dashboard = build_dashboard(spec)
    text = json.dumps(dashboard, indent=2, sort_keys=False) + "\n"
    return RenderedFile(Path("grafana") / "dashboards" / f"{dashboard['uid']}.json", text)


def write_files(files: list[RenderedFile], output_dir: Path) -> list[Path]:
    """Write the files under `output_dir`, each atomically; return the paths whose content changed."""
    changed = []
    for f in files:
        dest = output_dir / f.path
        if dest.is_file() and dest.read_text(encoding="utf-8") == f.text:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_text(f.text, encoding="utf-8")
        tmp.replace(dest)
        changed.append(dest)
    return changed


def stale_files(files: list[RenderedFile], output_dir: Path) -> list[Path]:
    """The rendered files whose copy under `output_dir` is missing or differs."""
    return [
        f.path for f in files
        if not (output_dir / f.path).is_file()
        or (output_dir / f.path).read_text(encoding="utf-8") != f.text
    ]
