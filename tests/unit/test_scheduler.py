"""The scheduler: failures stay inside their collector, snapshots never wait, on-demand runs are fresh."""

from __future__ import annotations

import asyncio

import pytest

from exporter import __version__
from exporter.metrics import MetricSpec, Samples
from exporter.scheduler import (
    BUILD_INFO,
    COLLECTOR_DURATION,
    COLLECTOR_ERRORS,
    COLLECTOR_LAST_SUCCESS,
    COLLECTOR_UP,
    Scheduler,
)
from tests.support.fakes import FAKE_RUN, FAKE_VALUE, FakeCollector
from tests.support.wait import async_wait_for


def value_of(buffers: list[Samples], spec: MetricSpec, target: str = "app", **labels: str) -> float | None:
    """The value of one series across a snapshot, or None when the snapshot does not hold it."""
    found = [v for b in buffers if b.target == target if (v := b.value(spec, **labels)) is not None]
    assert len(found) <= 1, f"{spec.name} appears {len(found)} times for {target}"
    return found[0] if found else None


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_successful_run_exposes_values_and_self_metrics() -> None:
    fake = FakeCollector(value=7)
    clock = Clock()
    scheduler = Scheduler([fake], clock=clock)

    status = await scheduler.collect("fake", "app")

    snap = scheduler.snapshot()
    assert status.up is True
    assert status.error is None
    assert value_of(snap, FAKE_VALUE) == 7
    assert value_of(snap, COLLECTOR_UP, collector="fake") == 1
    assert value_of(snap, COLLECTOR_ERRORS, collector="fake") == 0
    assert value_of(snap, COLLECTOR_LAST_SUCCESS, collector="fake") == clock.now
    assert value_of(snap, COLLECTOR_DURATION, collector="fake") is not None
    assert value_of(snap, BUILD_INFO, target="cachewarden", version=__version__) == 1


async def test_uncollected_collector_is_reported_down_without_values() -> None:
    scheduler = Scheduler([FakeCollector()])

    snap = scheduler.snapshot()

    assert scheduler.status("fake", "app").up is None
    assert value_of(snap, COLLECTOR_UP, collector="fake") == 0
    assert value_of(snap, FAKE_VALUE) is None


async def test_failing_collector_goes_down_counts_an_error_and_drops_previous_values() -> None:
    fake = FakeCollector(value=7)
    scheduler = Scheduler([fake])
    await scheduler.collect("fake", "app")
    assert value_of(scheduler.snapshot(), FAKE_VALUE) == 7

    fake.error = RuntimeError("connection refused")
    status = await scheduler.collect("fake", "app")

    snap = scheduler.snapshot()
    assert status.up is False
    assert status.error == "RuntimeError: connection refused"
    assert status.observation is None
    assert status.checks == []
    assert value_of(snap, FAKE_VALUE) is None, "a failed collector's old values must not be served as fresh"
    assert value_of(snap, COLLECTOR_UP, collector="fake") == 0
    assert value_of(snap, COLLECTOR_ERRORS, collector="fake") == 1


async def test_one_failing_collector_does_not_affect_another() -> None:
    broken, healthy = FakeCollector("broken"), FakeCollector("healthy", value=3)
    broken.error = OSError()
    scheduler = Scheduler([broken, healthy])

    statuses = await scheduler.collect_all()

    assert [s.up for s in statuses] == [False, True]
    assert broken.error is not None
    assert scheduler.status("fake", "broken").error == "OSError"
    assert value_of(scheduler.snapshot(), FAKE_VALUE, target="healthy") == 3


async def test_collection_that_overruns_its_timeout_goes_down() -> None:
    fake = FakeCollector(timeout=0.01)
    fake.hang = True
    scheduler = Scheduler([fake])

    status = await scheduler.collect("fake", "app")

    assert status.up is False
    assert status.error == "timed out after 0.01s"
    assert status.errors_total == 1
    assert value_of(scheduler.snapshot(), COLLECTOR_UP, collector="fake") == 0


class FakeServer(FakeCollector):
    """A collector whose target has its own `…_up` gauge, as Redis, SQL and FPM targets do."""

    kind = "fake_server"
    up = FAKE_VALUE


async def test_a_target_whose_collection_times_out_reads_up_0_and_1_again_once_it_answers() -> None:
    fake = FakeServer(timeout=0.01, value=1)
    scheduler = Scheduler([fake])
    await scheduler.collect("fake_server", "app")
    assert value_of(scheduler.snapshot(), FAKE_VALUE) == 1

    fake.hang = True
    for _ in range(3):  # every scrape while it hangs, not only the first
        await scheduler.collect("fake_server", "app")
        assert value_of(scheduler.snapshot(), FAKE_VALUE) == 0, "a hung target must read down, not vanish"

    fake.hang = False
    await scheduler.collect("fake_server", "app")
    assert value_of(scheduler.snapshot(), FAKE_VALUE) == 1


async def test_a_target_whose_collection_raises_reads_up_0() -> None:
    fake = FakeServer(value=1)
    fake.error = RuntimeError("driver bug")
    scheduler = Scheduler([fake])
    assert value_of(scheduler.snapshot(), FAKE_VALUE) is None  # not measured yet: unknown, not down
    await scheduler.collect("fake_server", "app")
    assert value_of(scheduler.snapshot(), FAKE_VALUE) == 0


async def test_collectors_own_timeout_is_reported_as_its_error_not_as_the_deadline() -> None:
    fake = FakeCollector(timeout=60)
    fake.error = TimeoutError("connect timed out")
    status = await Scheduler([fake]).collect("fake", "app")
    assert status.up is False
    assert status.error == "TimeoutError: connect timed out"


async def test_collector_recovers_after_failures() -> None:
    fake = FakeCollector(value=5)
    fake.error = RuntimeError("down")
    scheduler = Scheduler([fake])
    await scheduler.collect("fake", "app")
    await scheduler.collect("fake", "app")

    fake.error = None
    status = await scheduler.collect("fake", "app")

    snap = scheduler.snapshot()
    assert status.up is True
    assert status.error is None
    assert value_of(snap, FAKE_VALUE) == 5
    assert value_of(snap, COLLECTOR_UP, collector="fake") == 1
    assert value_of(snap, COLLECTOR_ERRORS, collector="fake") == 2, "the error counter never goes back"


async def test_on_demand_collection_waits_for_the_running_one_then_measures_afresh() -> None:
    fake = FakeCollector(value=None)  # each run reports its own run number
    fake.gate = asyncio.Event()
    scheduler = Scheduler([fake])

    scheduled = asyncio.create_task(scheduler.collect("fake", "app"))
    await fake.started.wait()
    on_demand = asyncio.create_task(scheduler.collect("fake", "app"))
    await asyncio.sleep(0)  # one loop turn: let the on-demand run reach the lock
    assert not on_demand.done(), "the on-demand run must wait for the running one"
    assert fake.calls == 1

    fake.gate.set()
    await scheduled
    status = await on_demand

    assert fake.calls == 2
    assert fake.max_in_flight == 1, "two collections of one target overlapped"
    assert status.observation is not None
    assert status.observation.details == {"run": 2}
    assert value_of(scheduler.snapshot(), FAKE_RUN) == 2


async def test_snapshot_keeps_serving_the_last_complete_values_while_a_collection_runs() -> None:
    fake = FakeCollector(value=None)
    scheduler = Scheduler([fake])
    await scheduler.collect("fake", "app")
    fake.gate = asyncio.Event()

    running = asyncio.create_task(scheduler.collect("fake", "app"))
    await fake.started.wait()
    snap = scheduler.snapshot()  # synchronous: it cannot wait for the running collection

    assert not running.done()
    assert value_of(snap, FAKE_RUN) == 1
    assert value_of(snap, COLLECTOR_UP, collector="fake") == 1
    fake.gate.set()
    await running
    assert value_of(scheduler.snapshot(), FAKE_RUN) == 2


async def test_run_collects_every_collector_repeatedly_until_cancelled() -> None:
    fast, other = FakeCollector("fast", interval=0.01, timeout=0.01), FakeCollector("other", interval=0.01,
                                                                                   timeout=0.01)
    scheduler = Scheduler([fast, other])
    task = asyncio.create_task(scheduler.run())

    async def both_ran_three_times() -> bool:
        return fast.calls >= 3 and other.calls >= 3

    await async_wait_for(both_ran_three_times, timeout=5, message="three runs of each collector")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await scheduler.close()
    assert fast.closed
    assert other.closed


def test_two_collectors_for_one_target_are_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        Scheduler([FakeCollector("app"), FakeCollector("app")])


def test_unknown_target_is_named_in_the_error() -> None:
    with pytest.raises(KeyError, match="no fake collector for target 'nope'"):
        Scheduler([FakeCollector()]).status("fake", "nope")
