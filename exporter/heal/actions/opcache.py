"""`opcache.invalidate` and `opcache.reset`, run inside the PHP-FPM pool (the CLI's OPcache is another one).

Invalidation is the gentle step: it drops only the scripts the OPcache collector found stale, suspect
or missing. A missing file cannot be invalidated (opcache_invalidate fails for it), which is what the
reset step, next in the shipped plans, is for.
"""

from __future__ import annotations

from typing import Any

from exporter.collectors.base import Observation
from exporter.heal.actions.base import Action, ActionError, ActionOutcome
from exporter.heal.actions.findings import opcache_scripts
from exporter.heal.phpexec import PhpError

AGENT_TIMEOUT = 30.0


class Invalidate(Action):
    name = "opcache.invalidate"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        pool = self.php_fpm(target)
        paths = opcache_scripts(observation)
        outcome = ActionOutcome()
        if dry_run or not paths:
            outcome.done.extend(f"would invalidate {p}" for p in paths)
            return outcome
        try:
            result: Any = await self.ctx.php.agent_action(pool, "invalidate", {"paths": paths}, AGENT_TIMEOUT)
        except PhpError as exc:
            raise ActionError(str(exc)) from None
        done = result.get("invalidated", []) if isinstance(result, dict) else []
        failed = result.get("failed", []) if isinstance(result, dict) else paths
        outcome.done.extend(f"invalidated {p}" for p in done)
        # Expected for files that are gone; reported, and left to the reset step.
        outcome.refused.extend(f"{p}: opcache_invalidate failed (file gone?)" for p in failed)
        return outcome


class Reset(Action):
    name = "opcache.reset"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        pool = self.php_fpm(target)
        outcome = ActionOutcome()
        if dry_run:
            outcome.done.append(f"would reset OPcache of pool {pool.name}")
            return outcome
        try:
            result: Any = await self.ctx.php.agent_action(pool, "reset", {}, AGENT_TIMEOUT)
        except PhpError as exc:
            raise ActionError(str(exc)) from None
        if isinstance(result, dict) and result.get("reset"):
            outcome.done.append(f"reset OPcache of pool {pool.name}")
        else:
            outcome.errors.append(
                f"opcache_reset() returned false in pool {pool.name} (OPcache off or restricted)"
            )
        return outcome
