"""Renders the status page (`/`) from the health report with jinja2 (autoescaped: paths are data)."""

from __future__ import annotations

import time

import jinja2

from exporter import __version__
from exporter.report import Report

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("exporter", "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
)


def _ago(ts: float) -> str:
    if not ts:
        return "never"
    seconds = max(0, int(time.time() - ts))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


_env.filters["ago"] = _ago


def render_status_page(report: Report, *, started_at: float) -> str:
    return _env.get_template("status.html.j2").render(
        report=report, version=__version__, uptime=_ago(started_at)
    )
