"""The interface every collector implements, and what one collection returns.

A collector instance watches one target of one subsystem (`kind`). It is built from that target's
configuration, collected on a schedule by `exporter.scheduler.Scheduler`, and can be collected on
demand (a heal re-measures a single target right after fixing it).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from exporter.findings import Findings
from exporter.metrics import MetricSpec, Samples

# How many offending items `check`'s text and the status page list; the rest are counted. A Check keeps
# every item (`check --format json` emits them all, heal actions may need them); only rendering caps.
ITEM_CAP = 50


class Verdict(enum.Enum):
    OK = "ok"
    PROBLEM = "problem"
    NOTE = "note"  # informational: a capability is unavailable, nothing is wrong with the target


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the health report: a name, a verdict, a sentence and the offending items."""

    name: str
    verdict: Verdict
    summary: str
    items: tuple[str, ...] = ()
    total_items: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict is not Verdict.PROBLEM

    @classmethod
    def from_items(
        cls, name: str, items: Sequence[str], ok_summary: str, problem_summary: str
    ) -> Check:
        """A check that is a problem exactly when `items` is not empty; `{n}` in the summary is the count."""
        if not items:
            return cls(name, Verdict.OK, ok_summary.format(n=0))
        listed = tuple(sorted(items))
        return cls(name, Verdict.PROBLEM, problem_summary.format(n=len(items)), listed, len(listed))

    @property
    def listed(self) -> tuple[str, ...]:
        """The items a human-facing rendering shows: the first ITEM_CAP."""
        return self.items[:ITEM_CAP]

    @property
    def unlisted(self) -> int:
        """How many offending items `listed` leaves out."""
        return max(self.total_items, len(self.items)) - len(self.listed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "items": list(self.items),
            "total_items": self.total_items,
        }


@dataclass(slots=True)
class Observation:
    """The result of one successful collection of one target."""

    samples: Samples
    checks: list[Check] = field(default_factory=list)
    # What was found, free-form, for people and JSON (`check --format json`); never exposed as labels.
    details: dict[str, Any] = field(default_factory=dict)
    # What was found wrong, typed, for the heal to act on (exporter.findings).
    findings: Findings | None = None


class Collector(abc.ABC):
    """One subsystem's measurement of one target."""

    kind: ClassVar[str]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    # The target's own `…_up` gauge (one of `metrics`), if it has one. A collection that raises or runs
    # out of time leaves no observation, and the scheduler then exports this gauge at 0: a hung server
    # must read as down, not vanish (an alert on `…_up == 0` cannot fire on a series that is absent).
    up: ClassVar[MetricSpec | None] = None

    def __init__(self, target: str, *, interval: float, timeout: float) -> None:
        self.target = target
        self.interval = interval
        self.timeout = timeout

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.target)

    def new_samples(self) -> Samples:
        return Samples(self.target)

    @abc.abstractmethod
    async def collect(self) -> Observation:
        """Measure the target once. Raise on failure; the scheduler turns that into `up` 0."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most collectors hold nothing
        """Release connections and other resources held between collections."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}/{self.target}>"
