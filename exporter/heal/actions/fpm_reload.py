"""`fpm.reload`: restart PHP-FPM through the command the configuration names, for what only a restart
replaces: preloaded code (`opcache.preload`), which opcache_reset() cannot remove.

The command (`php_fpm[].restart_command`, an argument list, e.g. `["systemctl", "reload",
"php8.2-fpm"]`) runs under the rules `cache.warm` commands follow: no shell, none of cachewarden's
secrets in its environment, output not kept, killed after `restart_timeout`
(exporter.heal.child_process). A reload returns before FPM has restarted, so the step then waits, up to
restart_timeout again, until the pool answers with an OPcache started after the one measured before:
only then has the restart happened. Without a restart_command the step cannot run at all; the runner
stops such a plan before any step with the result `needs_restart`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from exporter.collectors.base import Observation
from exporter.config import WarmCommand
from exporter.heal.actions.base import Action, ActionOutcome, NeedsRestart
from exporter.heal.actions.cache_warm import run_command
from exporter.heal.phpexec import PhpError

POLL_INTERVAL = 0.2
STATUS_TIMEOUT = 5.0


def opcache_start_time(result: Any) -> float | None:
    status = result.get("status") if isinstance(result, dict) else None
    stats = status.get("opcache_statistics") if isinstance(status, dict) else None
    value = stats.get("start_time") if isinstance(stats, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


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
        before = await self._start_time(pool.name)
        cmd = WarmCommand(argv=pool.restart_command, timeout=pool.restart_timeout)
        await run_command(self.ctx.config, cmd, "/", outcome)
        if not outcome.ok:
            return outcome
        deadline = time.monotonic() + pool.restart_timeout
        while True:
            now = await self._start_time(pool.name)
            if now is not None and (before is None or now > before):
                outcome.done.append(f"PHP-FPM pool {pool.name} answers with an OPcache started at {now:.0f}")
                return outcome
            if time.monotonic() >= deadline:
                outcome.errors.append(f"PHP-FPM pool {pool.name} did not come back with a new OPcache within "
                                      f"{pool.restart_timeout:g}s of {pool.restart_command}")
                return outcome
            await asyncio.sleep(POLL_INTERVAL)

    async def _start_time(self, name: str) -> float | None:
        """OPcache's start time as the pool reports it now; None while it cannot answer."""
        try:
            result = await self.ctx.php.agent_action(self.php_fpm(name), "status", {}, STATUS_TIMEOUT)
        except PhpError:
            return None
        return opcache_start_time(result)
