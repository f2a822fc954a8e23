"""The fpm collector against real php-fpm8.2 pools: status metrics, saturation, down and recovery."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from exporter.collectors import build_collectors
from exporter.collectors.base import Verdict
from exporter.collectors.fpm import (
    FPM_LISTEN_QUEUE_MAX,
    FPM_MAX_CHILDREN,
    FPM_MAX_CHILDREN_REACHED,
    FPM_PROCESSES,
    FPM_STATUS_TIMEOUTS,
    FPM_UP,
    FpmCollector,
)
from exporter.collectors.opcache import OpcacheCollector
from exporter.config import parse
from exporter.scheduler import Scheduler
from tests.support import phpfpm
from tests.support.phpfpm import Fpm, FpmFactory
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm


def target(name: str, fpm: Fpm, **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": fpm.address, "agent_dir": str(fpm.agent_dir),
            "pool_config": str(fpm.pool_config), **extra}


def fpm_collector(fpm: Fpm, **extra: Any) -> FpmCollector:
    config = parse({"php_fpm": [target("www", fpm, **extra)]})
    collectors = build_collectors(config, {"opcache": False})
    assert isinstance(collectors[0], FpmCollector)
    return collectors[0]


async def test_status_page_and_pool_config_give_the_contract_metrics(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(pool={"pm.max_children": 3})
    obs = await fpm_collector(fpm).collect()
    s = obs.samples
    assert s.value(FPM_UP) == 1
    assert s.value(FPM_MAX_CHILDREN) == 3
    assert s.value(FPM_PROCESSES, state="active") == 1  # the worker answering the status request
    assert s.value(FPM_PROCESSES, state="idle") == 2
    assert s.value(FPM_STATUS_TIMEOUTS) == 0
    assert obs.details["pool"] == "app"
    assert all(c.ok for c in obs.checks)


async def test_saturated_pool_counts_status_timeouts_then_max_children_reached(php_fpm: FpmFactory) -> None:
    # TCP, because FPM measures its listen queue only on TCP sockets; dynamic, because a static pool
    # never counts "max children reached".
    fpm = php_fpm(tcp=True, pool={"pm": "dynamic", "pm.max_children": 2, "pm.start_servers": 1,
                                  "pm.min_spare_servers": 1, "pm.max_spare_servers": 1})
    collector = fpm_collector(fpm, status_timeout="400ms")
    first, release_first = fpm.hold("first")
    await fpm.wait_held("first")
    second, release_second = fpm.hold("second")
    await fpm.wait_held("second")
    try:
        async def saturation_seen() -> bool:
            obs = await collector.collect()
            assert obs.samples.value(FPM_UP) == 0
            assert obs.checks[0].verdict is Verdict.PROBLEM
            assert "saturated" in obs.checks[0].summary
            # Timed-out status requests stay queued; FPM samples its queue once a second.
            return "max_children" in fpm.log.read_text() and collector.status_timeouts >= 3

        await async_wait_for(saturation_seen, timeout=20, interval=0, message="saturation seen by FPM")
    finally:
        release_first.touch()
        release_second.touch()
        await first
        await second

    async def recovered() -> bool:
        s = (await collector.collect()).samples
        return s.value(FPM_UP) == 1 and (s.value(FPM_MAX_CHILDREN_REACHED) or 0) > 0 and (
            s.value(FPM_LISTEN_QUEUE_MAX) or 0) > 0

    await async_wait_for(recovered, timeout=20, message="max children reached and listen queue max > 0")
    s = (await collector.collect()).samples
    assert (s.value(FPM_STATUS_TIMEOUTS) or 0) >= 3  # the counter survives recovery


async def test_pool_down_is_reported_others_keep_collecting_and_it_recovers(php_fpm: FpmFactory) -> None:
    down, other = php_fpm("down"), php_fpm("other")
    config = parse({"php_fpm": [target("down", down), target("other", other)]})
    scheduler = Scheduler(build_collectors(config))
    down.stop()
    await scheduler.collect_all()

    st = scheduler.status("fpm", "down")
    assert st.up is True  # the collector worked; the pool is what is down
    assert st.observation is not None
    assert st.observation.samples.value(FPM_UP) == 0
    assert "refuses connections" in st.observation.checks[0].summary
    assert not st.healthy
    assert scheduler.status("opcache", "down").up is False  # the agent cannot run without FPM
    other_fpm = scheduler.status("fpm", "other")
    assert other_fpm.observation is not None
    assert other_fpm.observation.samples.value(FPM_UP) == 1
    assert scheduler.status("opcache", "other").up is True

    down.start()
    st = await scheduler.collect("fpm", "down")
    assert st.observation is not None
    assert st.observation.samples.value(FPM_UP) == 1
    assert (await scheduler.collect("opcache", "down")).up is True


async def test_a_frozen_pool_counts_a_status_timeout_said_to_be_saturated_or_hung(
        php_fpm: FpmFactory) -> None:
    # A stopped master and workers: the kernel still queues the connection, nothing answers. The help
    # text and the check must not claim "every worker busy" alone.
    fpm = php_fpm()
    collector = fpm_collector(fpm, status_timeout="300ms", connect_timeout="200ms")
    assert fpm.process is not None
    master = fpm.process.pid
    with open(f"/proc/{master}/task/{master}/children") as f:  # noqa: ASYNC230 - a /proc read
        children = f.read().split()
    pids = [master, *map(int, children)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        obs = await collector.collect()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert obs.samples.value(FPM_UP) == 0
    assert obs.samples.value(FPM_STATUS_TIMEOUTS) == 1
    assert "saturated (every worker busy) or hung" in obs.checks[0].summary
    assert "hung" in FPM_STATUS_TIMEOUTS.help


async def test_an_agent_run_holding_the_pool_slot_counts_as_a_status_timeout(php_fpm: FpmFactory) -> None:
    fpm = php_fpm()
    config = parse({"php_fpm": [target("www", fpm, connect_timeout="200ms", status_timeout="300ms")],
                    "collectors": {"fpm": {"timeout": "1s"}}})
    fpm_c, opcache_c = build_collectors(config)
    assert isinstance(fpm_c, FpmCollector)
    assert isinstance(opcache_c, OpcacheCollector)
    started, release = fpm.root / "agent.started", fpm.root / "agent.release"
    slow_agent = asyncio.create_task(opcache_c.agent.run_source("slow", """<?php
        cachewarden_run(function (array $args): bool {
            touch($args['started']);
            while (!file_exists($args['release'])) { usleep(20000); clearstatcache(); }
            return true;
        });""", {"started": str(started), "release": str(release)}))
    try:
        async def agent_running() -> bool:
            return started.exists()

        await async_wait_for(agent_running, message="agent run holding the pool slot")
        async with asyncio.timeout(fpm_c.timeout):  # the scheduler would cancel it after this
            obs = await fpm_c.collect()
    finally:
        release.touch()
        await slow_agent
    assert obs.samples.value(FPM_UP) == 0
    assert obs.samples.value(FPM_STATUS_TIMEOUTS) == 1
    assert "agent run on this pool did not finish within 0.5s" in obs.checks[0].summary
    assert (await fpm_c.collect()).samples.value(FPM_UP) == 1


async def test_unix_socket_listen_queue_is_said_to_be_unmeasured(php_fpm: FpmFactory) -> None:
    obs = await fpm_collector(php_fpm()).collect()
    queue = next(c for c in obs.checks if c.name == "fpm.listen_queue")
    assert queue.verdict is Verdict.NOTE
    assert "cachewarden_fpm_status_timeouts_total" in queue.summary
