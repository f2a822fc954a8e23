"""Runs every collector on its own interval with its own timeout and keeps the last complete results.

`/metrics` reads `snapshot()`, which only copies references: a scrape never waits for a collection.
A collection that raises or times out flips that collector's `up` to 0, counts an error and drops its
previous values, so stale numbers are never served as fresh; the target's own `…_up` gauge (a
collector's `up`) is then exported at 0, since a server that did not answer in time is down. One
collection per collector runs at a time; an on-demand collection (`collect`) that arrives while one is
running waits for it and then measures again, because a heal needs a measurement taken after its fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from exporter import __version__
from exporter.collectors.base import Check, Collector, Observation
from exporter.metrics import Samples, counter, gauge, info

log = logging.getLogger(__name__)

COLLECTOR_UP = gauge(
    "cachewarden_collector_up", "1 if the collector's last run succeeded, else 0.", ("collector",)
)
COLLECTOR_DURATION = gauge(
    "cachewarden_collector_duration_seconds", "How long the collector's last run took.", ("collector",)
)
COLLECTOR_LAST_SUCCESS = gauge(
    "cachewarden_collector_last_success_timestamp_seconds",
    "Unix time of the collector's last successful run (0 if never).",
    ("collector",),
)
COLLECTOR_ERRORS = counter(
    "cachewarden_collector_errors_total", "Collector runs that raised or timed out.", ("collector",)
)
BUILD_INFO = info(
    "cachewarden_build_info", "cachewarden's version; target is always 'cachewarden'.", ("version",)
)

SELF_METRICS = (COLLECTOR_UP, COLLECTOR_DURATION, COLLECTOR_LAST_SUCCESS, COLLECTOR_ERRORS, BUILD_INFO)


@dataclass(slots=True)
class Status:
    """What is known about one (collector, target) pair, for metrics, `check` and the status page."""

    collector: Collector
    up: bool | None = None  # None: not collected yet
    duration: float = 0.0
    last_attempt: float = 0.0
    last_success: float = 0.0
    errors_total: int = 0
    error: str | None = None
    observation: Observation | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def kind(self) -> str:
        return self.collector.kind

    @property
    def target(self) -> str:
        return self.collector.target

    @property
    def checks(self) -> list[Check]:
        return self.observation.checks if self.observation else []

    @property
    def healthy(self) -> bool:
        return bool(self.up) and all(c.ok for c in self.checks)


class Scheduler:
    def __init__(
        self,
        collectors: Sequence[Collector],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._statuses = {c.key: Status(c) for c in collectors}
        if len(self._statuses) != len(collectors):
            raise ValueError("two collectors share a (kind, target) pair")
        self._clock = clock
        self._monotonic = monotonic

    @property
    def collectors(self) -> list[Collector]:
        return [s.collector for s in self._statuses.values()]

    def statuses(self) -> list[Status]:
        return list(self._statuses.values())

    def status(self, kind: str, target: str) -> Status:
        try:
            return self._statuses[(kind, target)]
        except KeyError:
            raise KeyError(f"no {kind} collector for target {target!r}") from None

    def snapshot(self) -> list[Samples]:
        """The last complete samples of every collector that is up, plus self metrics."""
        buffers = [s.observation.samples for s in self._statuses.values() if s.up and s.observation]
        buffers.extend(self._down_samples())
        buffers.extend(self._self_samples())
        return buffers

    def _down_samples(self) -> Iterable[Samples]:
        for st in self._statuses.values():
            if st.up is False and (spec := st.collector.up) is not None:
                down = Samples(st.target)
                down.add(spec, 0)
                yield down

    def _self_samples(self) -> Iterable[Samples]:
        build = Samples("cachewarden")
        build.add_info(BUILD_INFO, version=__version__)
        yield build
        for st in self._statuses.values():
            own = Samples(st.target)
            own.add(COLLECTOR_UP, 1.0 if st.up else 0.0, collector=st.kind)
            own.add(COLLECTOR_DURATION, st.duration, collector=st.kind)
            own.add(COLLECTOR_LAST_SUCCESS, st.last_success, collector=st.kind)
            own.add(COLLECTOR_ERRORS, st.errors_total, collector=st.kind)
            yield own

    async def collect(self, kind: str, target: str) -> Status:
        """Collect one target now (waiting for a run already in progress, then measuring afresh)."""
        return await self._run(self.status(kind, target))

    async def collect_all(self) -> list[Status]:
        return list(await asyncio.gather(*(self._run(s) for s in self._statuses.values())))

    async def _run(self, st: Status) -> Status:
        async with st.lock:
            started = self._monotonic()
            st.last_attempt = self._clock()
            deadline = asyncio.timeout(st.collector.timeout)
            try:
                async with deadline:
                    observation = await st.collector.collect()
            except TimeoutError as exc:
                # A collector's own timeout (a driver's connect timeout) is its error, not our deadline.
                if deadline.expired():
                    self._fail(st, f"timed out after {st.collector.timeout:g}s")
                else:
                    self._fail(st, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a collector's failure must stay inside it
                self._fail(st, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            else:
                if st.up is False:
                    log.info("collector %s/%s recovered", st.kind, st.target)
                st.up, st.error, st.observation = True, None, observation
                st.last_success = self._clock()
            finally:
                st.duration = self._monotonic() - started
        return st

    def _fail(self, st: Status, error: str) -> None:
        # Log on a change only: a target that stays down must not flood the log every interval.
        if st.error != error:
            log.warning("collector %s/%s failed: %s", st.kind, st.target, error)
        st.up, st.error, st.observation = False, error, None
        st.errors_total += 1

    async def run(self) -> None:
        """Collect every collector on its interval until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for st in self._statuses.values():
                tg.create_task(self._loop(st), name=f"collect-{st.kind}-{st.target}")

    async def _loop(self, st: Status) -> None:
        interval = st.collector.interval
        next_run = self._monotonic()
        while True:
            await self._run(st)
            # Keep a fixed cadence; if a run overran, start the next one at once rather than pile up.
            next_run = max(next_run + interval, self._monotonic())
            await asyncio.sleep(max(0.0, next_run - self._monotonic()))

    async def close(self) -> None:
        for c in self.collectors:
            with contextlib.suppress(Exception):
                await c.close()
