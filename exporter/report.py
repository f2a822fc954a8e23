"""The health report behind `cachewarden check` and the status page: one entry per (collector, target)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.collectors.base import Check, Verdict
from exporter.scheduler import Status
from exporter.text import display, json_safe

if TYPE_CHECKING:
    from exporter.heal.feasibility import Feasibility
    from exporter.heal.token import HealState


@dataclass(frozen=True, slots=True)
class TargetReport:
    kind: str
    target: str
    up: bool | None
    error: str | None
    duration: float
    last_success: float
    checks: tuple[Check, ...]
    # What was derived from a Laravel app's .env (discovery targets only), secrets already redacted.
    derived: tuple[dict[str, Any], ...] = ()
    errors_total: int = 0  # failed collections since start

    @property
    def pending(self) -> bool:
        """Not collected yet: neither healthy nor a problem."""
        return self.up is None

    @property
    def healthy(self) -> bool:
        return bool(self.up) and all(c.ok for c in self.checks)

    @property
    def state(self) -> str:
        if self.up is None:
            return "not collected yet"
        return "collected" if self.up else "collection failing"

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
            **({"derived": list(self.derived)} if self.derived else {}),
        }


@dataclass(frozen=True, slots=True)
class Report:
    targets: tuple[TargetReport, ...]
    heal: HealState | None = None  # shown, never a problem: heal is off by choice or by missing token
    warnings: tuple[str, ...] = ()  # about the configuration, e.g. a secret file everyone can read
    # Heal plans that cannot run on a target (exporter.heal.feasibility): problems, and notes (links made
    # at load, plans that stop by design).
    heal_problems: tuple[str, ...] = ()
    heal_notes: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        """No problem found; a target not collected yet is not one (the page is neutral until it is)."""
        return self.problem_count == 0

    @property
    def problem_count(self) -> int:
        return sum(1 for t in self.targets if t.up is False) + sum(
            1 for t in self.targets for c in t.checks if not c.ok
        ) + len(self.heal_problems)

    @property
    def check_count(self) -> int:
        return sum(len(t.checks) for t in self.targets)

    @property
    def pending_count(self) -> int:
        return sum(1 for t in self.targets if t.pending)

    def as_dict(self) -> dict[str, Any]:
        """For JSON: every string encodable (see exporter.text)."""
        out: dict[str, Any] = {"healthy": self.healthy, "problems": self.problem_count,
                               "targets": [t.as_dict() for t in self.targets]}
        if self.heal is not None:
            out["heal"] = self.heal.as_dict()
        out["heal_problems"] = list(self.heal_problems)
        out["heal_notes"] = list(self.heal_notes)
        out["warnings"] = list(self.warnings)
        return json_safe(out)

    def as_text(self) -> str:
        marks = {Verdict.OK: "ok  ", Verdict.PROBLEM: "FAIL", Verdict.NOTE: "note"}
        lines = []
        for t in self.targets:
            took = "" if t.pending else f" ({t.duration * 1000:.0f} ms)"
            lines.append(f"{display(t.kind)}/{display(t.target)}: {t.state}{took}")
            if t.error:
                lines.append(f"  FAIL {display(t.error)}")
            for c in t.checks:
                lines.append(f"  {marks[c.verdict]} {display(c.name)}: {display(c.summary)}")
                lines.extend(f"         {display(item)}" for item in c.listed)
                if c.unlisted:
                    lines.append(f"         … and {c.unlisted} more")
        if self.heal is not None:
            source = f" (token from {self.heal.token_source})" if self.heal.token_source else ""
            lines.append(display(f"heal: {self.heal.summary}{source}"))
            lines.extend(f"  WARN {display(w)}" for w in self.heal.warnings)
        lines.extend(f"  FAIL {display(p)}" for p in self.heal_problems)
        lines.extend(f"  note {display(n)}" for n in self.heal_notes)
        lines.extend(f"WARN {display(w)}" for w in self.warnings)
        verdict = "healthy" if self.healthy else f"{self.problem_count} problem(s) found"
        lines.append(f"cachewarden: {verdict}")
        return "\n".join(lines) + "\n"


def build_report(statuses: Iterable[Status], heal: HealState | None = None,
                 warnings: tuple[str, ...] = (), feasibility: Feasibility | None = None) -> Report:
    return Report(tuple(
        TargetReport(s.kind, s.target, s.up, s.error, s.duration, s.last_success, tuple(s.checks),
                     tuple(s.observation.details.get("derived", ())) if s.observation else (),
                     s.errors_total)
        for s in sorted(statuses, key=lambda s: (s.kind, s.target))
    ), heal, warnings, *((feasibility.problems, feasibility.notes) if feasibility else ((), ())))
