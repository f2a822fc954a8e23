"""`fpm.reload`: restart PHP-FPM through the command the configuration names, for what only a restart
replaces: preloaded code (`opcache.preload`), which opcache_reset() cannot remove.

The command (`php_fpm[].restart_command`, an argument list, e.g. `["systemctl", "reload",
"php8.2-fpm"]`) runs under the rules `cache.warm` commands follow: no shell, none of cachewarden's
secrets in its environment, output not kept, killed after `restart_timeout`
(exporter.heal.child_process). A reload returns before FPM has restarted, so the step then waits, up
to restart_timeout again, until the pool answers from a restarted master: an OPcache started later
than before, or (within the same second) none of the workers there were before. Without a
restart_command the step cannot run at all; the runner stops such a plan before any step with the
result `needs_restart`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from exporter.collectors.base import Observation
from exporter.collectors.fpm import pool_identity
from exporter.config import WarmCommand
from exporter.heal.actions.base import Action, ActionOutcome, NeedsRestart
from exporter.heal.actions.cache_warm import run_command
from exporter.heal.phpexec import PhpError

POLL_INTERVAL = 0.2
STATUS_TIMEOUT = 5.0


Incarnation = tuple[float | None, frozenset[int]]  # OPcache's start time, the pool's worker pids


def incarnation(result: Any) -> Incarnation:
    """What tells one run of the FPM master from the next, from an agent status answer."""
    status = result.get("status") if isinstance(result, dict) else None
    stats = status.get("opcache_statistics") if isinstance(status, dict) else None
    value = stats.get("start_time") if isinstance(stats, dict) else None
    workers = result.get("workers") if isinstance(result, dict) else None
    pids = frozenset(p for p in workers or [] if isinstance(p, int))
    return (float(value) if isinstance(value, (int, float)) else None), pids


def restarted(before: Incarnation | None, now: Incarnation | None) -> bool:
    if now is None or now[0] is None:
        return False
    if before is None or before[0] is None or now[0] > before[0]:
        return True
    # Start times are whole seconds: a restart within the same second shows as all-new workers.
    return now[0] == before[0] and bool(before[1]) and bool(now[1]) and not before[1] & now[1]


class FpmReload(Action):
    name = "fpm.reload"

    def can_clear(self, target: str, observation: Observation | None) -> frozenset[str]:
        if self.php_fpm(target).restart_command is None:
            return frozenset()
        return super().can_clear(target, observation)

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        pool = self.php_fpm(target)
        if pool.restart_command is None:
            raise NeedsRestart(f"php_fpm[{pool.name}].restart_command is not set: restart PHP-FPM by hand")
        outcome = ActionOutcome()
        if dry_run:
            outcome.done.append(f"would run {pool.restart_command}")
            return outcome
        before = await self._incarnation(pool.name)
        cmd = WarmCommand(argv=pool.restart_command, timeout=pool.restart_timeout)
        await run_command(self.ctx.config, cmd, "/", outcome)
        if not outcome.ok:
            return outcome
        deadline = time.monotonic() + pool.restart_timeout
        while True:
            now = await self._incarnation(pool.name)
            if now is not None and restarted(before, now):
                outcome.done.append(f"PHP-FPM pool {pool.name} answers from a restarted master (OPcache "
                                    f"started at {now[0]:.0f})")
                return outcome
            if time.monotonic() >= deadline:
                outcome.errors.append(f"PHP-FPM pool {pool.name} did not come back restarted within "
                                      f"{pool.restart_timeout:g}s of {pool.restart_command}")
                return outcome
            await asyncio.sleep(POLL_INTERVAL)

    async def _incarnation(self, name: str) -> Incarnation | None:
        """The pool's master as it answers now; None while it cannot answer."""
        pool = self.php_fpm(name)
        try:
            result = await self.ctx.php.agent_action(pool, "status", {}, STATUS_TIMEOUT)
        except PhpError:
            return None
        if isinstance(result, dict):
            _, result["workers"] = await pool_identity(self.ctx.php.fpm.pools.endpoint(pool), pool)
        return incarnation(result)
