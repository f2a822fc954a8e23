"""The status page (`/`) and what keeps it fresh (`/status.json`), from the health report and the heal.

For each failing check the page names the alerts that fire on it (with their runbooks, from the same
`alerts.runbook_base_url` the rendered rules use), the heal plan of each and the `curl` that runs it;
then the last heal runs, and each collector's health. It is rendered by jinja2, autoescaped (paths
are data); every value shown goes through `exporter.text.display` first.

A page left open polls `/status.json` with a few lines of inline script: the "last updated" time and
the collectors' ages change in place, and when the findings or the heal runs change, the page says so
and offers a reload rather than reloading under the reader. Without script a `<noscript>` refresh
reloads the whole page.

jinja2 and the template are loaded on the first visit, not at start: most sidecars are only scraped,
and jinja2 costs their every pod ~3 MB of RSS.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from exporter import __version__
from exporter.check_alerts import alerts_for_check, alerts_for_collector_down
from exporter.config import Config, split_listen_address
from exporter.heal.advice import HealOffer, offer, server_url
from exporter.heal.runner import HealRunner
from exporter.heal.runs import Run
from exporter.report import Report, TargetReport
from exporter.text import display, json_safe

if TYPE_CHECKING:
    import jinja2

    from exporter.deploy.records import DeployRun

DEPLOYS_SHOWN = 10
# How many heal runs the page lists, newest first (GET /heal lists every one kept).
RUNS_SHOWN = 10
# Seconds between two polls of /status.json by an open page; `/?refresh=N` chooses within the bounds.
POLL_SECONDS = 10
POLL_BOUNDS = (1, 3600)


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
    env.filters.update(ago=_ago, clock=_clock, iso=_iso, ms=_ms)
    return env


def _inline_source(name: str) -> str:
    """An included file as it appears in the page (jinja2 drops a template's last newline)."""
    return (resources.files("exporter") / "templates" / name).read_text(encoding="utf-8").removesuffix("\n")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The page runs its own inline script and style and nothing else: were a name from outside ever to
# slip past the escaping, a browser would still not run it. The script may fetch /status.json only.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    f"script-src {_csp_hash(_inline_source('status.js'))}",
    f"style-src {_csp_hash(_inline_source('status.css'))}",
    "connect-src 'self'", "img-src data:", "base-uri 'none'", "form-action 'none'",
    "frame-ancestors 'none'",
])


def _since(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


def _ago(ts: float) -> str:
    return f"{_since(time.time() - ts)} ago" if ts else "never"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


@dataclass(frozen=True, slots=True)
class AlertLink:
    name: str
    runbook_url: str | None  # None: not a shipped alert (never the case for a mapped one; tests hold it)
    heal: HealOffer | None  # None: the alert has no heal plan


@dataclass(frozen=True, slots=True)
class Finding:
    """One failing check, or a collector that cannot collect its target."""

    kind: str
    target: str
    check: str
    summary: str
    alerts: tuple[AlertLink, ...]


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    started_at: float
    target: str
    what: str  # the plan (alertname) or the action run by hand
    steps: tuple[str, ...]
    result: str
    duration: float
    who: str
    dry_run: bool


@dataclass(frozen=True, slots=True)
class StatusPage:
    report: Report
    findings: tuple[Finding, ...]
    runs: tuple[RunRow, ...]
    generated_at: float
    runs_note: str | None = None  # what the runs table cannot show, and why

    @property
    def fingerprint(self) -> str:
        """Changes when what the page lists changes (findings, runs, targets' states), not with ages."""
        parts = [f"{f.kind}\0{f.target}\0{f.check}\0{f.summary}" for f in self.findings]
        parts += [f"{r.id}\0{r.result}" for r in self.runs]
        parts += [f"{t.kind}\0{t.target}\0{t.up}" for t in self.report.targets]
        return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]

    @property
    def title(self) -> str:
        report = self.report
        if not report.healthy:
            return f"cachewarden — {report.problem_count} problem(s)"
        return f"cachewarden — {'waiting' if report.pending_count else 'healthy'}"


def who(run: Run) -> str:
    """webhook, manual or CLI, and from where: the requester of a run as the page shows it."""
    return _who(run.requested_by, run.fingerprint)


def _who(requested_by: str, fingerprint: str | None) -> str:
    if requested_by == "cli":
        return "CLI (cachewarden heal)"
    # Only an Alertmanager delivery carries an alert's fingerprint; a manual run may run a plan too.
    return f"{'webhook' if fingerprint is not None else 'manual'} from {requested_by}"


def _run_row(run: Run) -> RunRow:
    return RunRow(run.id, run.started_at, run.target, run.plan or " → ".join(run.steps), tuple(run.steps),
                  run.result or run.state, run.duration, who(run), run.dry_run)


def _recorded_row(added: float, record: dict[str, Any]) -> RunRow | None:
    """A run as the audit stream recorded it (see exporter.heal.runner._audit_fields); None if malformed."""
    steps, duration = record.get("steps"), record.get("duration_seconds")
    if not (isinstance(steps, list) and steps and isinstance(duration, int | float)):
        return None
    plan, fingerprint = record.get("plan"), record.get("fingerprint")
    return RunRow(str(record.get("run_id")), added - duration, str(record.get("target")),
                  str(plan) if plan else " → ".join(map(str, steps)), tuple(map(str, steps)),
                  str(record.get("result")), float(duration),
                  _who(str(record.get("who")), None if fingerprint is None else str(fingerprint)),
                  record.get("dry_run") is True)


def merge_runs(local: list[Run], recorded: list[tuple[float, dict[str, Any]]] | None) -> tuple[RunRow, ...]:
    """This process's runs and those the audit stream recorded (other sidecars', the CLI's), newest
    first, at most RUNS_SHOWN; a run both know is shown as this process has it."""
    rows = {r.id: _run_row(r) for r in local}
    for added, record in recorded or ():
        row = _recorded_row(added, record)
        if row is not None and row.id not in rows:
            rows[row.id] = row
    return tuple(sorted(rows.values(), key=lambda r: r.started_at, reverse=True)[:RUNS_SHOWN])


def build_status_page(report: Report, config: Config | None = None, runner: HealRunner | None = None,
                      server: str | None = None, now: float | None = None,
                      recorded: list[tuple[float, dict[str, Any]]] | None = None) -> StatusPage:
    """The page's content. `server` is the URL `serve` answers at (`exporter.heal.advice.server_url`),
    for the `curl` commands (default: plain HTTP on `config.listen_address`);
    without a `runner` (a report made outside `serve`) no heal plan is offered and no run listed.
    `recorded` are the runs the audit stream holds (`Audit.recent_runs`), None if it did not answer."""
    config = config or Config()
    server = server or server_url(split_listen_address(config.listen_address))
    state = report.heal

    def links(alerts: tuple[str, ...], target: str) -> tuple[AlertLink, ...]:
        return tuple(AlertLink(
            a, config.alerts.runbook_url(a) if a in config.alerts.rules else None,
            offer(runner, state, server, a, target) if runner is not None and state is not None else None,
        ) for a in alerts)

    findings: list[Finding] = []
    for t in report.targets:
        if t.up is False:
            findings.append(Finding(t.kind, t.target, "collector down", t.error or "collection failed",
                                    links(alerts_for_collector_down(t.kind), t.target)))
        findings.extend(Finding(t.kind, t.target, c.name, c.summary,
                                links(alerts_for_check(t.kind, c), t.target))
                        for c in t.checks if not c.ok)
    runs = merge_runs(runner.recent_runs(), recorded) if runner is not None else ()
    if config.heal.redis_url is None:
        note = ("runs of this process only: with heal.redis_url, those of cachewarden heal and of other "
                "sidecars too")
    elif recorded is None:
        note = "the audit stream in heal.redis_url did not answer: runs of this process only"
    else:
        note = None
    return StatusPage(report, tuple(findings), runs, time.time() if now is None else now, note)


def poll_seconds(refresh: str | None) -> int:
    """The poll interval asked for by `?refresh=N` (whole seconds, clamped), else POLL_SECONDS."""
    if refresh is None or not refresh.isascii() or not refresh.isdigit() or len(refresh) > 6:
        return POLL_SECONDS
    return min(max(int(refresh), POLL_BOUNDS[0]), POLL_BOUNDS[1])


def render_status_page(page: StatusPage | Report, *, started_at: float, poll: int = POLL_SECONDS,
                       deploys: Sequence[DeployRun] = ()) -> str:
    """The HTML of `page` (a bare Report is shown with the default configuration and no heal)."""
    if isinstance(page, Report):
        page = build_status_page(page)
    return _environment().get_template("status.html.j2").render(
        page=page, report=page.report, version=__version__, uptime=_since(time.time() - started_at),
        poll_seconds=poll, deploys=deploys[:DEPLOYS_SHOWN],
    )


def _collector(t: TargetReport) -> dict[str, Any]:
    return {
        "id": f"{t.kind}/{t.target}",
        "state": t.state,
        "duration": None if t.pending else _ms(t.duration),
        "last_success": _ago(t.last_success),
        "errors": t.errors_total,
    }


def status_json(page: StatusPage) -> dict[str, Any]:
    """What an open page refreshes in place, as texts it shows (JSON-safe, see exporter.text)."""
    return json_safe({
        "generated_at": page.generated_at,
        "updated": _clock(page.generated_at),
        "title": page.title,
        "problems": page.report.problem_count,
        "fingerprint": page.fingerprint,
        "collectors": [_collector(t) for t in page.report.targets],
    })
