"""Where a secret must never appear: everything cachewarden shows people or writes to its log."""

from __future__ import annotations

from exporter.report import build_report
from exporter.scheduler import Scheduler
from exporter.status_page import render_status_page


def shown_to_people(scheduler: Scheduler, log_text: str, *objects: object) -> list[str]:
    """The status page (first), the text and JSON report, the log, and the repr of `objects`."""
    report = build_report(scheduler.statuses())
    return [render_status_page(report, started_at=0), report.as_text(), str(report.as_dict()), log_text,
            *map(repr, objects)]


def assert_nowhere(secrets: tuple[str, ...], shown: list[str]) -> None:
    for secret in secrets:
        leaks = [text[:80] for text in shown if secret in text]
        assert not leaks, f"a secret was shown: {leaks}"
