"""Renders the status page (`/`) from the health report with jinja2 (autoescaped: paths are data).

jinja2 and the template are loaded on the first visit, not at start: most sidecars are only scraped,
and jinja2 costs their every pod ~3 MB of RSS.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from exporter import __version__
from exporter.report import Report
from exporter.text import display

if TYPE_CHECKING:
    import jinja2

    from exporter.deploy.records import DeployRun


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exporter", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        # Every value shown goes through display() before it is escaped: a file name that is not UTF-8
        # cannot make the page unencodable (it answered 500), and a control character shows as \x1b.
        finalize=display,
    )
    env.filters["ago"] = _ago
    return env


def _since(ts: float) -> str:
    seconds = max(0, int(time.time() - ts))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


def _ago(ts: float) -> str:
    return f"{_since(ts)} ago" if ts else "never"


def render_status_page(report: Report, *, started_at: float, deploys: Sequence[DeployRun] = ()) -> str:
    return _environment().get_template("status.html.j2").render(
        report=report, version=__version__, uptime=_since(started_at), deploys=deploys[:DEPLOYS_SHOWN]
    )


DEPLOYS_SHOWN = 10
