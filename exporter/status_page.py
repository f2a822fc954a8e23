"""Renders the status page (`/`) from the health report with jinja2 (autoescaped: paths are data)."""

from __future__ import annotations

import time

import jinja2

from exporter import __version__
from exporter.report import Report
from exporter.text import display

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("exporter", "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
    # Every value shown goes through display() before it is escaped: a file name that is not UTF-8
    # cannot make the page unencodable (it answered 500), and a control character shows as \x1b.
    finalize=display,
)


def _since(ts: float) -> str:
    seconds = max(0, int(time.time() - ts))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


def _ago(ts: float) -> str:
    return f"{_since(ts)} ago" if ts else "never"


_env.filters["ago"] = _ago


def render_status_page(report: Report, *, started_at: float) -> str:
    return _env.get_template("status.html.j2").render(
        report=report, version=__version__, uptime=_since(started_at)
    )
