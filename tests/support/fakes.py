"""An in-process collector whose behaviour a test scripts: value, checks, failure, hang, gate."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from exporter.collectors.base import Check, Collector, Observation
from exporter.metrics import gauge

FAKE_VALUE = gauge("cachewarden_fake_value", "A number the test chooses.")
FAKE_RUN = gauge("cachewarden_fake_run", "Which run of the collector produced this snapshot (1, 2, …).")


class FakeCollector(Collector):
    """Returns `value` (or its run number when `value` is None) and `checks`, or fails as told.

    `gate`: when set to an unset Event, every collection waits on it (a collection "in progress").
    `started` is set as soon as a collection begins, so a test can act while it is in progress.
    """

    kind = "fake"
    metrics = (FAKE_VALUE, FAKE_RUN)

    def __init__(self, target: str = "app", *, interval: float = 60.0, timeout: float = 5.0,
                 value: float | None = 1.0, checks: Sequence[Check] = ()) -> None:
        super().__init__(target, interval=interval, timeout=timeout)
        self.value = value
        self.checks = list(checks)
        self.error: Exception | None = None
        self.hang = False
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    async def collect(self) -> Observation:
        self.calls += 1
        run = self.calls
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.hang:
                await asyncio.Event().wait()  # never set: only the scheduler's timeout ends this
            if self.error is not None:
                raise self.error
            s = self.new_samples()
            s.add(FAKE_VALUE, run if self.value is None else self.value)
            s.add(FAKE_RUN, run)
            return Observation(s, list(self.checks), {"run": run})
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True
