"""The heal, assembled in one place for `serve` and for `cachewarden heal`.

Both build the same thing from the configuration and the running collectors: the coordination store
(Redis with heal.redis_url, else in memory), the runner with its locks, deduplication, backlog and the
audit that writes the store's stream, the actions (running PHP through the PHP-FPM registry the
collectors use) and the plans, judged for feasibility once. `running` opens what the heal runs in the
background and closes the runner and the store in the reverse order, so a caller uses it as one pair
(the app from an aiohttp `cleanup_ctx`, the command around its one run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from exporter.config import Config
from exporter.heal.feasibility import judge
from exporter.heal.runner import HealRunner
from exporter.heal.store import Store, open_store
from exporter.php.pools import FpmPools
from exporter.scheduler import Scheduler

log = logging.getLogger(__name__)


def assemble_heal(config: Config, scheduler: Scheduler, pools: FpmPools, *, enabled: bool,
                  store: Store | None = None) -> HealRunner:
    """The heal's runner over `scheduler`'s collectors and `pools`; `enabled` is whether the heal acts
    (heal.enabled and a usable token: exporter.heal.token), which decides whether a plan that cannot
    run is a problem. `store` replaces the one heal.redis_url names (tests)."""
    runner = HealRunner(config, scheduler, store if store is not None else open_store(config.heal),
                        pools=pools)
    runner.feasibility = judge(config, runner.plans, enabled)
    return runner


def log_feasibility(runner: HealRunner) -> None:
    """One line per pool linked at load and per plan that cannot run (a warning): at `serve` start."""
    for note in runner.feasibility.notes:
        log.info("heal: %s", note)
    for problem in runner.feasibility.problems:
        log.warning("heal: %s", problem)


@contextlib.asynccontextmanager
async def running(runner: HealRunner, *, background: bool) -> AsyncIterator[HealRunner]:
    """The heal while it serves: with `background`, the periodic recount of ineffective plans runs.
    On exit, runs still in progress stop, the store gets its last writes, then it is closed."""
    refresh = (asyncio.create_task(runner.refresh_ineffective_forever(), name="heal-ineffective")
               if background else None)
    try:
        yield runner
    finally:
        if refresh is not None:
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresh
        await runner.close()
        await runner.store.close()
