"""`opcache.invalidate` and `opcache.reset`, run inside the PHP-FPM pool (the CLI's OPcache is another one).

Invalidation is the gentle step: it drops only the scripts the OPcache collector found stale, suspect,
missing or of another release, in shared memory and in the file cache: `opcache_invalidate($path,
true)` also deletes the script's file-cache entry (measured on PHP 8.2), so what it fixes survives the
next restart. When the file cache was measured, each entry that was wrong is looked at again after the
run: it must be gone, or rewritten since (a request compiled the new code), else the step failed. A
missing file cannot be invalidated (opcache_invalidate fails for it), which is what the reset step,
next in the shipped plans, is for.

A reset empties shared memory only. With `validate_timestamps=0` and stale file-cache entries, the
scripts are loaded again from those entries right after it, so a reset then cannot clear stale
scripts and is not run for them (`can_clear`); preloaded code survives a reset in any case.
"""

from __future__ import annotations

import asyncio
from typing import Any

from exporter.collectors.base import Observation
from exporter.collectors.opcache import CODE_REVISION_DRIFT, OPCACHE_SCRIPTS_STALE, OPCACHE_SCRIPTS_SUSPECT
from exporter.findings import EntryProblem, FileCacheFindings
from exporter.heal.actions.base import Action, ActionError, ActionOutcome
from exporter.heal.actions.findings import opcache_findings
from exporter.heal.actions.opcache_file_cache import (
    EntryDir,
    check_file_cache_dir,
    entry_state,
    file_cache_findings,
)
from exporter.heal.names import ACTIONS
from exporter.heal.phpexec import PhpError

AGENT_TIMEOUT = 30.0
# What stale file-cache entries keep coming back after a reset (validate_timestamps=0).
_RELOADED_FROM_FILE_CACHE = frozenset(
    s.name for s in (OPCACHE_SCRIPTS_STALE, OPCACHE_SCRIPTS_SUSPECT, CODE_REVISION_DRIFT))


class Invalidate(Action):
    name = "opcache.invalidate"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        pool = self.php_fpm(target)
        paths = opcache_findings(observation).to_invalidate()
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
        findings = file_cache_findings(observation)
        if findings is not None:
            wrong = set(findings.sources(EntryProblem.STALE, EntryProblem.SUSPECT,
                                         EntryProblem.OUTSIDE_RELEASE))
            checked = [p for p in done if p in wrong]
            if checked:
                left = await asyncio.to_thread(self._entries_left, findings, checked)
                outcome.errors.extend(left)
        return outcome

    def _entries_left(self, findings: FileCacheFindings, invalidated: list[str]) -> list[str]:
        """Entries of invalidated scripts that are still there in their old version."""
        root = check_file_cache_dir(findings.directory, self.ctx.config)
        entries = EntryDir(root, findings.system_id, findings.configured)
        try:
            out = []
            for source in invalidated:
                state = entry_state(entries, source)
                if state in ("stale", "suspect"):
                    out.append(f"{source}: its file-cache entry in {entries.base} is still older than the "
                               "source after opcache_invalidate")
                elif state is not None and state.startswith("refused"):
                    out.append(f"{source}: file-cache entry not checked ({state})")
            return out
        finally:
            entries.close()


class Reset(Action):
    name = "opcache.reset"

    def can_clear(self, target: str, observation: Observation | None) -> frozenset[str]:
        clears = ACTIONS[self.name].clears
        fc = opcache_findings(observation).file_cache
        if fc is not None and fc.served_stale and fc.sources(EntryProblem.STALE, EntryProblem.SUSPECT):
            return clears - _RELOADED_FROM_FILE_CACHE
        return clears

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


