"""The health report behind `cachewarden check` and the status page: one entry per (collector, target)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from exporter.collectors.base import Check, Verdict
from exporter.scheduler import Status


@dataclass(frozen=True, slots=True)
class TargetReport:
    kind: str
    target: str
    up: bool | None
    error: str | None
    duration: float
    last_success: float
    checks: tuple[Check, ...]

    @property
    def healthy(self) -> bool:
        return bool(self.up) and all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "collector": self.kind,
            "target": self.target,
            "up": self.up,
            "error": self.error,
            "healthy": self.healthy,
            "duration_seconds": round(self.duration, 6),
            "last_success_timestamp": self.last_success or None,
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass(frozen=True, slots=True)
class Report:
    targets: tuple[TargetReport, ...]

    @property
    def healthy(self) -> bool:
        return all(t.healthy for t in self.targets)

    @property
    def problem_count(self) -> int:
        return sum(1 for t in self.targets if not t.up) + sum(
            1 for t in self.targets for c in t.checks if not c.ok
        )

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "problems": self.problem_count,
                "targets": [t.as_dict() for t in self.targets]}

    def as_text(self) -> str:
        marks = {Verdict.OK: "ok  ", Verdict.PROBLEM: "FAIL", Verdict.NOTE: "note"}
        lines = []
        for t in self.targets:
            state = "up" if t.up else ("not collected" if t.up is None else "DOWN")
            lines.append(f"{t.kind}/{t.target}: {state} ({t.duration * 1000:.0f} ms)")
            if t.error:
                lines.append(f"  FAIL {t.error}")
            for c in t.checks:
                lines.append(f"  {marks[c.verdict]} {c.name}: {c.summary}")
                lines.extend(f"         {item}" for item in c.items)
                if c.total_items > len(c.items):
                    lines.append(f"         … and {c.total_items - len(c.items)} more")
        verdict = "healthy" if self.healthy else f"{self.problem_count} problem(s) found"
        lines.append(f"cachewarden: {verdict}")
        return "\n".join(lines) + "\n"


def build_report(statuses: Iterable[Status]) -> Report:
    return Report(tuple(
        TargetReport(s.kind, s.target, s.up, s.error, s.duration, s.last_success, tuple(s.checks))
        for s in sorted(statuses, key=lambda s: (s.kind, s.target))
    ))
