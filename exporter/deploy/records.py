"""The record of one deploy, its metrics and the last deploys kept for the status page and `GET /deploy`.

    cachewarden_deploy_runs_total{target="shop",result="verified"} 12
    cachewarden_deploy_phase_seconds{target="shop",phase="verify"} 1.84

Results of a deploy: verified (verify met every condition), done (the phases asked for ran without
error and verify was not one of them), unverified (verify's deadline passed, or a
condition that waiting cannot clear), failed (a phase could not run), dry_run, refused (another deploy
of the same target holds its lock). A phase is ok, skipped, failed, dry_run, needs_restart (activation
cannot take effect without an FPM restart), verified or unverified.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from exporter.heal.actions.base import ActionOutcome
from exporter.metrics import Samples, counter, gauge
from exporter.text import json_safe

PHASES = ("prepare", "switch", "activate", "verify")
RESULTS = ("verified", "done", "unverified", "failed", "dry_run", "refused")

DEPLOY_RUNS = counter(
    "cachewarden_deploy_runs_total",
    "Deploys by result (verified, done, unverified, failed, dry_run, refused); target is the Laravel app.",
    ("result",),
)
DEPLOY_PHASE_SECONDS = gauge(
    "cachewarden_deploy_phase_seconds",
    "How long each phase of the app's last deploy took (0 until one ran).", ("phase",),
)
DEPLOY_METRICS = (DEPLOY_RUNS, DEPLOY_PHASE_SECONDS)


@dataclass(slots=True)
class PhaseRecord:
    phase: str
    result: str = "ok"
    duration: float = 0.0
    outcome: ActionOutcome = field(default_factory=ActionOutcome)
    unmet: list[str] = field(default_factory=list)  # verify: the conditions still not met, named

    def as_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "result": self.result, "duration_seconds": round(self.duration, 6),
                "unmet": self.unmet, **self.outcome.as_dict()}


@dataclass(slots=True)
class DeployRun:
    target: str
    release: str
    phases: list[str]
    dry_run: bool
    requested_by: str
    previous_release: str | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    result: str | None = None
    note: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    records: list[PhaseRecord] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    @property
    def succeeded(self) -> bool:
        return self.result in ("verified", "done", "dry_run")

    def as_dict(self) -> dict[str, Any]:
        return json_safe({
            "id": self.id, "target": self.target, "release": self.release,
            "previous_release": self.previous_release, "phases": self.phases, "dry_run": self.dry_run,
            "requested_by": self.requested_by, "result": self.result, "note": self.note,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "duration_seconds": round(self.duration, 6),
            "phase_results": [r.as_dict() for r in self.records],
        })

    def audit_fields(self) -> dict[str, Any]:
        """The run without the per-item lists: an audit line stays one readable line."""
        return json_safe({
            "run_id": self.id, "who": self.requested_by, "target": self.target, "release": self.release,
            "previous_release": self.previous_release, "dry_run": self.dry_run, "result": self.result,
            "note": self.note, "duration_seconds": round(self.duration, 6),
            "phase_results": [{"phase": r.phase, "result": r.result, "duration_seconds": round(r.duration, 6),
                               "done": len(r.outcome.done), "errors": r.outcome.errors[:20],
                               "unmet": r.unmet} for r in self.records],
        })


class DeployMetrics:
    """Deploy counters and phase durations as a snapshot source, plus the last deploys."""

    def __init__(self, targets: Iterable[str], keep: int = 20) -> None:
        self.runs: Counter[tuple[str, str]] = Counter()
        self.phase_seconds: dict[tuple[str, str], float] = {}
        self.recent: deque[DeployRun] = deque(maxlen=keep)
        for t in targets:
            for result in RESULTS:
                self.runs[(t, result)] += 0
            for phase in PHASES:
                self.phase_seconds[(t, phase)] = 0.0

    def record(self, run: DeployRun) -> None:
        self.runs[(run.target, run.result or "failed")] += 1
        for r in run.records:
            self.phase_seconds[(run.target, r.phase)] = r.duration
        self.recent.appendleft(run)

    def snapshot(self) -> list[Samples]:
        by_target: dict[str, Samples] = {}
        for (target, result), n in sorted(self.runs.items()):
            by_target.setdefault(target, Samples(target)).add(DEPLOY_RUNS, n, result=result)
        for (target, phase), seconds in sorted(self.phase_seconds.items()):
            by_target.setdefault(target, Samples(target)).add(DEPLOY_PHASE_SECONDS, seconds, phase=phase)
        return list(by_target.values())
