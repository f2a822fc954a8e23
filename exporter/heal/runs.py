"""The record of one heal run: what was asked, each step taken, and whether the fix was verified."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from exporter.heal.actions.base import ActionOutcome
from exporter.heal.names import operation
from exporter.text import json_safe


def new_run_id() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class StepRecord:
    action: str
    result: str  # one of audit.RUN_RESULTS
    duration: float = 0.0
    outcome: ActionOutcome | None = None
    error: str | None = None
    unmet: list[str] = field(default_factory=list)  # conditions still not met after this step

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action, "result": self.result, "duration_seconds": round(self.duration, 6),
            "error": self.error, "unmet": self.unmet,
            **(self.outcome.as_dict() if self.outcome else {}),
        }


@dataclass(slots=True)
class Run:
    target: str
    steps: list[str]
    dry_run: bool
    requested_by: str
    plan: str | None = None  # the alertname; None for a manual run of one action
    args: dict[str, str] = field(default_factory=dict)  # for the steps that take them (names.PARAMETERS)
    fingerprint: str | None = None
    starts_at: str | None = None
    id: str = field(default_factory=new_run_id)
    state: str = "pending"  # pending, running, finished
    result: str | None = None
    verified: bool = False
    note: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    records: list[StepRecord] = field(default_factory=list)
    cooling: set[str] = field(default_factory=set)  # steps found cooling down when it was admitted

    @property
    def operations(self) -> list[str]:
        """The steps with their arguments, as they are locked and cool down (names.operation)."""
        return [operation(s, self.args) for s in self.steps]

    @property
    def duration(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    @property
    def succeeded(self) -> bool:
        return self.result in ("verified", "already_healthy", "dry_run")

    def as_dict(self) -> dict[str, Any]:
        """For JSON answers and audit lines: every string encodable (paths may not be UTF-8)."""
        return json_safe({
            "id": self.id, "plan": self.plan, "target": self.target, "steps": self.steps, "args": self.args,
            "dry_run": self.dry_run, "requested_by": self.requested_by, "fingerprint": self.fingerprint,
            "starts_at": self.starts_at, "state": self.state, "result": self.result,
            "verified": self.verified, "note": self.note, "started_at": self.started_at,
            "finished_at": self.finished_at, "duration_seconds": round(self.duration, 6),
            "step_results": [r.as_dict() for r in self.records],
        })
