"""The deploy's phases, each one the heal's own actions pointed at the release.

- prepare: the new release's `.env` read as phpdotenv reads it; its bootstrap caches that are stale
  or half-written rebuilt atomically by `laravel.cache_rebuild` (absent ones stay absent); every view
  of the release compiled by `views.recompile` (temporary file + rename, inside the app's pool) into
  the compiled directory the release will use, before any request can ask for it (in place, only
  those the views collector finds stale or uncompiled: the others are compiled from their current
  source already).
- switch: the pipeline's own; `--switch-command` runs under the rules warm commands follow (no shell,
  no secrets in its environment, output not kept).
- activate: OPcache measured afresh, after every FPM worker's realpath cache has let go of the old
  release when `current` was just switched; `opcache.invalidate` drops exactly the scripts found stale,
  suspect, missing or of another release, in memory and in the file cache, plus the PHP files that
  differ from the previous release (or that `--changed-files` lists). Only when neither the previous
  release, nor a measurement taken before the switch, nor exact timestamps tell what changed is
  `opcache.reset` run. `fpm.reload` runs only for preloaded code; `cache.warm` when heal.warm names
  the app.
- verify: exporter.deploy.verify; afterwards `views.remove_orphans` removes compiled views of releases
  that no longer exist.

Nothing here writes a file itself: every write and delete is an action's, behind its guards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from exporter.collectors.base import Observation
from exporter.collectors.opcache_preload import RELEASE_SETTLE_SECONDS
from exporter.config import Config, LaravelTarget, PhpFpmTarget, WarmCommand
from exporter.deploy import release as releases
from exporter.deploy.records import PHASES, DeployMetrics, DeployRun, PhaseRecord
from exporter.deploy.verify import Progress, bootstrap_conditions, verify
from exporter.findings import OpcacheFindings, ScriptProblem, ViewFindings
from exporter.heal.actions.base import ActionContext, ActionError, ActionOutcome, NeedsRestart
from exporter.heal.actions.cache_warm import Warm, run_command
from exporter.heal.actions.findings import opcache_findings, view_findings
from exporter.heal.actions.fpm_reload import FpmReload
from exporter.heal.actions.laravel_cache_rebuild import CacheRebuild
from exporter.heal.actions.opcache import Invalidate, Reset
from exporter.heal.actions.safety import CompiledRoots
from exporter.heal.actions.views_orphans import RemoveOrphans
from exporter.heal.actions.views_recompile import Recompile
from exporter.heal.claims import ADMIT_WITHIN, Claims
from exporter.heal.runner import HealRunner
from exporter.metrics import Samples

log = logging.getLogger(__name__)

LOCK = "deploy"  # the lock name a deploy holds on its app, in the heal's lock store
COMMAND_TIMEOUT = 300.0


class BadRequest(ValueError):
    """An unknown app, phase or release folder (exit 2, HTTP 400)."""


@dataclass(frozen=True, slots=True)
class DeployRequest:
    target: str
    release: str | None = None
    previous_release: str | None = None
    phases: tuple[str, ...] = PHASES
    dry_run: bool = False
    changed_files: tuple[str, ...] | None = None  # relative paths, as `git diff --name-only` lists them
    switch_command: tuple[str, ...] | None = None  # only from the command line, never over HTTP
    rollback_command: tuple[str, ...] | None = None
    verify_timeout: float = 60.0
    requested_by: str = "cli"


@dataclass(slots=True)
class _Context:
    """What the phases of one deploy learn and hand on."""

    laravel: LaravelTarget
    pool: PhpFpmTarget | None
    release: Path
    previous: Path | None
    baseline: bool = False  # OPcache was measured before this deploy's activation
    outcomes: list[ActionOutcome] = field(default_factory=list)


class Deployer:
    """Runs deploys with the heal's own parts, built once by the heal runner and handed down: its PHP
    executor (so cachewarden as a whole takes one FPM worker at a time), audit trail, store and locks."""

    def __init__(self, runner: HealRunner, metrics: DeployMetrics | None = None) -> None:
        self.config = runner.config
        self.scheduler = runner.scheduler
        self.php = runner.php
        self.audit = runner.audit
        self.runner = runner
        self.metrics = metrics or DeployMetrics([t.name for t in self.config.laravel])

    def _actions(self, config: Config | None = None, laravel: LaravelTarget | None = None) -> ActionContext:
        """The heal's action context, its compiled directories resolved now (after a switch, say)."""
        config = config or self.config
        return ActionContext(config, self.php, CompiledRoots([laravel] if laravel else config.laravel))

    def plan(self, req: DeployRequest) -> DeployRun:
        """The run for a request, or BadRequest naming what is wrong with it (blocking: resolves paths)."""
        laravel = next((t for t in self.config.laravel if t.name == req.target), None)
        if laravel is None:
            raise BadRequest(f"no laravel target named {req.target!r}; known: "
                             f"{sorted(t.name for t in self.config.laravel)}")
        unknown = [p for p in req.phases if p not in PHASES]
        if unknown or not req.phases:
            raise BadRequest(f"unknown phase(s) {unknown}; phases are {', '.join(PHASES)}")
        pool = self.php.pool_for_app(laravel.name)
        try:
            release = releases.accept_release(req.release, laravel, pool)
            previous = releases.accept_release(req.previous_release, laravel, pool) \
                if req.previous_release else None
        except releases.ReleaseError as exc:
            raise BadRequest(str(exc)) from None
        phases = [p for p in PHASES if p in req.phases]
        return DeployRun(laravel.name, str(release), phases, req.dry_run, req.requested_by,
                         previous_release=str(previous) if previous else None)

    async def run(self, req: DeployRequest, progress: Progress | None = None) -> DeployRun:
        """Plan (BadRequest), take the app's deploy lock, run the phases in order, audit and count."""
        run = await asyncio.to_thread(self.plan, req)
        laravel = next(t for t in self.config.laravel if t.name == req.target)
        ctx = _Context(laravel, self.php.pool_for_app(laravel.name), Path(run.release),
                       Path(run.previous_release) if run.previous_release else None)
        if not run.dry_run and not await self._lock(run):
            run.result, run.note = "refused", f"another deploy of {run.target!r} is running"
            run.finished_at = time.time()
            self.metrics.record(run)
            await self.audit.event("deploy_refused", run.audit_fields())
            return run
        await self.audit.event("deploy_started", run.audit_fields())
        try:
            await self._phases(run, req, ctx, progress)
        except asyncio.CancelledError:
            run.result, run.note = "failed", "interrupted by shutdown"
            raise
        except Exception as exc:  # a bug in one deploy must not take the sidecar down
            log.exception("deploy %s failed", run.id)
            run.result, run.note = "failed", f"internal error: {type(exc).__name__}"
        finally:
            run.finished_at = time.time()
            if not run.dry_run:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.runner.locks.release([LOCK], run.target, run.id))
            self.metrics.record(run)
            await asyncio.shield(self.audit.event("deploy_finished", run.audit_fields()))
        return run

    async def _lock(self, run: DeployRun) -> bool:
        """Take the app's deploy lock as the heal takes its action locks (in Redis for a fleet)."""
        claims = Claims(self.runner.store, self.runner.backlog, run.id)
        try:
            async with asyncio.timeout(ADMIT_WITHIN):
                held = await self.runner.locks.acquire(claims, [LOCK], run.target)
        except BaseException:
            claims.abandon()
            raise
        if held and await claims.confirm():
            return True
        await claims.release()
        return False

    async def _phases(self, run: DeployRun, req: DeployRequest, ctx: _Context,
                      progress: Progress | None) -> None:
        for phase in run.phases:
            record = PhaseRecord(phase)
            run.records.append(record)
            started = time.monotonic()
            try:
                if phase == "prepare":
                    await self._prepare(run, ctx, record)
                elif phase == "switch":
                    await self._switch(run, req, ctx, record)
                elif phase == "activate":
                    await self._activate(run, req, ctx, record)
                else:
                    await verify(self.scheduler, ctx.laravel, ctx.pool, record, run.dry_run,
                                 time.monotonic() + req.verify_timeout, progress,
                                 functools.partial(self._leftovers, ctx, record))
                    if record.result == "verified":
                        await self._remove_orphans(ctx, record)
            except NeedsRestart as exc:
                record.result = "needs_restart"
                record.outcome.errors.append(str(exc))
            except ActionError as exc:
                record.outcome.errors.append(str(exc))
            except OSError as exc:
                record.outcome.errors.append(f"{type(exc).__name__}: {exc.strerror or exc}")
            if record.result == "ok" and run.dry_run:
                record.result = "dry_run"
            if record.outcome.errors and record.result in ("ok", "dry_run"):
                record.result = "failed"
            record.duration = time.monotonic() - started
            await self.audit.event("deploy_phase", {"run_id": run.id, "target": run.target,
                                                    **record.as_dict()})
            if record.result == "failed" and phase in ("prepare", "switch"):
                break  # nothing after a failed prepare or switch would serve the release it meant
        run.result = _result(run)
        if run.result in ("unverified", "failed") and req.rollback_command and "switch" in run.phases:
            await self._rollback(run, req)

    # --- prepare ---------------------------------------------------------------------------------

    async def _prepare(self, run: DeployRun, ctx: _Context, record: PhaseRecord) -> None:
        out = record.outcome
        problem = await asyncio.to_thread(releases.check_dotenv, ctx.release)
        if problem:
            out.errors.append(problem)
            return
        out.done.append(f"{ctx.release / '.env'} parses as Laravel reads it")
        target = await asyncio.to_thread(releases.release_target, ctx.laravel, ctx.release)
        views = await asyncio.to_thread(releases.list_views, target.views_dir)
        if target is ctx.laravel:
            # In place (`git pull`): the views collector knows which compiled views are already fresh,
            # and compiling those again would only take an FPM worker from the app for nothing.
            observation = await self._measure("views", ctx.laravel.name)
            if observation is not None:
                found = view_findings(observation)
                wanted = {v.source for v in found.stale} | set(found.uncompiled)
                out.notes.append(f"{len(views) - len(wanted & set(views))} of {len(views)} view(s) already "
                                 "compiled from their current source")
                views = [v for v in views if v in wanted]
        if run.dry_run:
            # Not even the compiler is loaded into FPM: a dry run leaves OPcache as it found it.
            out.done.append(f"would compile {len(views)} view(s) of {target.views_dir} into "
                            f"{target.compiled_dir}")
        elif views:
            config = self.config.model_copy(update={"laravel": [
                target if t.name == target.name else t for t in self.config.laravel]})
            uncompiled = Observation(Samples(target.name), findings=ViewFindings(uncompiled=tuple(views)))
            compiled = await Recompile(self._actions(config, target)).run(target.name, uncompiled, False)
            _merge(out, compiled)
        await self._bootstrap_caches(run, ctx, target, out)
        if "switch" in run.phases and ctx.pool is not None:
            # A look at OPcache before the switch makes the drift exact for what the switch changes.
            ctx.baseline = (await self._measure("opcache", ctx.pool.name)) is not None

    async def _bootstrap_caches(self, run: DeployRun, ctx: _Context, target: LaravelTarget,
                                out: ActionOutcome) -> None:
        """`laravel.cache_rebuild` on the release's stale or half-written bootstrap caches, measured as
        the laravel_caches collector measures the app (absent caches stay absent)."""
        if target is ctx.laravel:
            try:
                status = await self.scheduler.collect("laravel_caches", target.name)
            except KeyError:
                return  # the collector is switched off: the caches are not cachewarden's business here
            observation = status.observation if status.up else None
            error = status.error
        elif run.dry_run:
            out.notes.append("a new release's bootstrap caches are measured when it is prepared, not in a "
                             "dry run (measuring runs PHP inside the pool)")
            return
        else:
            from exporter.collectors.laravel_caches import LaravelCachesCollector

            opts = self.config.collectors.laravel_caches
            collector = LaravelCachesCollector(target, interval=opts.interval, timeout=opts.timeout,
                                               php=self.php, php_cli=self.config.heal.php_cli is not None)
            try:
                async with asyncio.timeout(opts.timeout):
                    observation, error = await collector.collect(), None
            except Exception as exc:  # as the scheduler turns a failed collection into a reason
                observation, error = None, f"{type(exc).__name__}: {exc}"
            finally:
                await collector.close()
        if observation is None:
            out.errors.append(f"cannot measure the bootstrap caches of {target.root}: {error}")
            return
        unmet = bootstrap_conditions(observation, target)
        if not unmet:
            return
        config = self.config.model_copy(update={"laravel": [
            target if t.name == target.name else t for t in self.config.laravel]})
        rebuilt = await CacheRebuild(self._actions(config, target)).run(target.name, observation, run.dry_run)
        _merge(out, rebuilt)

    # --- switch ----------------------------------------------------------------------------------

    async def _switch(self, run: DeployRun, req: DeployRequest, ctx: _Context, record: PhaseRecord) -> None:
        before = Path(await asyncio.to_thread(os.path.realpath, ctx.laravel.root))
        if ctx.previous is None and before != ctx.release:
            ctx.previous = before  # where `current` points before the switch
            run.previous_release = str(before)
        if req.switch_command is None:
            record.result = "skipped"
            record.outcome.notes.append("the switch is the pipeline's own (no --switch-command)")
            return
        if ctx.pool is not None and not ctx.baseline:
            ctx.baseline = (await self._measure("opcache", ctx.pool.name)) is not None
        cmd = WarmCommand(argv=list(req.switch_command), timeout=COMMAND_TIMEOUT)
        if run.dry_run:
            record.outcome.done.append(f"would run {cmd.argv}")
            return
        await run_command(self.config, cmd, str(ctx.laravel.root.parent), record.outcome)

    # --- activate --------------------------------------------------------------------------------

    async def _activate(self, run: DeployRun, req: DeployRequest, ctx: _Context, record: PhaseRecord) -> None:
        out = record.outcome
        actions = self._actions()
        if ctx.pool is None:
            out.notes.append(f"no php_fpm target serves {ctx.laravel.name!r} (php_fpm[].laravel): OPcache "
                             "is left alone")
        else:
            await self._activate_opcache(run, req, ctx, record, actions,
                                         time.monotonic() + req.verify_timeout)
        if any(w.target == ctx.laravel.name for w in self.config.heal.warm):
            _merge(out, await Warm(actions).run(ctx.laravel.name, None, run.dry_run))

    async def _activate_opcache(self, run: DeployRun, req: DeployRequest, ctx: _Context,
                                record: PhaseRecord, actions: ActionContext, deadline: float) -> None:
        assert ctx.pool is not None
        out = record.outcome
        with contextlib.suppress(KeyError):  # reported by _measure
            # A look before this one (before the switch, or the sidecar's own collections) makes the
            # first-seen drift inference tell what the switch changed.
            ctx.baseline |= self.scheduler.status("opcache", ctx.pool.name).last_success > 0
        observation = await self._measure("opcache", ctx.pool.name, out)
        if observation is None:
            return
        settle = observation.samples.value(RELEASE_SETTLE_SECONDS) or 0.0
        if settle > 0:
            # Until then a worker may resolve `current` to the old release and cache its scripts again,
            # under the symlinked path too (opcache.revalidate_path=0): dropping them before would not
            # last. PHP's realpath cache counts whole seconds, hence the extra second.
            wait = min(settle + 1.0, max(0.0, deadline - time.monotonic()))
            verb = "would wait" if run.dry_run else "waited"
            out.notes.append(f"{verb} {wait:.1f}s until no FPM worker can resolve "
                             f"{ctx.pool.release_symlink} to the previous release (realpath_cache_ttl)")
            if not run.dry_run:
                await asyncio.sleep(wait)
                observation = await self._measure("opcache", ctx.pool.name, out)
                if observation is None:
                    return
        changed: list[str] = []
        served = Path(await asyncio.to_thread(os.path.realpath, ctx.laravel.root))
        if req.changed_files is not None:
            changed = releases.listed_changes(list(req.changed_files), served)
        elif ctx.previous is not None and ctx.previous != served:
            changed = await asyncio.to_thread(releases.changed_scripts, ctx.previous, served)
        known = (req.changed_files is not None or (ctx.previous is not None and ctx.previous != served)
                 or ctx.baseline or opcache_findings(observation).exact)
        # An OPcache that cannot list its scripts (restrict_api) tells nothing either.
        known &= isinstance(observation.findings, OpcacheFindings)
        found = opcache_findings(observation)
        scripts = {**found.scripts, ScriptProblem.STALE: tuple(dict.fromkeys(
            [*found.scripts.get(ScriptProblem.STALE, ()), *changed]))}
        merged = Observation(observation.samples, observation.checks, observation.details,
                             dataclasses.replace(found, scripts=scripts))
        _merge(out, await Invalidate(actions).run(ctx.pool.name, merged, run.dry_run))
        if not known:
            out.notes.append("what changed is unknown (no previous release or changed-file list, no "
                             "earlier measurement, validate_timestamps=0): OPcache is reset")
            _merge(out, await Reset(actions).run(ctx.pool.name, observation, run.dry_run))
        if opcache_findings(observation).preload_stale:
            try:
                _merge(out, await FpmReload(actions).run(ctx.pool.name, observation, run.dry_run))
            except NeedsRestart as exc:
                # Verify names it too, and stops at once: waiting cannot replace preloaded code.
                record.result = "needs_restart"
                out.errors.append(f"preloaded scripts changed: {exc}")

    async def _measure(self, kind: str, target: str, out: ActionOutcome | None = None) -> Observation | None:
        try:
            status = await self.scheduler.collect(kind, target)
        except KeyError:
            if out is not None:
                out.errors.append(f"no {kind} collector for {target!r} (--no-collector.{kind}?)")
            return None
        if not status.up and out is not None:
            out.errors.append(f"cannot measure {kind} of {target!r}: {status.error}")
        return status.observation if status.up else None

    async def _leftovers(self, ctx: _Context, record: PhaseRecord, observation: Observation) -> None:
        """Invalidate the old release's scripts that requests in flight during activation cached again."""
        assert ctx.pool is not None
        scripts = opcache_findings(observation).scripts.get(ScriptProblem.OUTSIDE_RELEASE, ())
        only = Observation(observation.samples, [], findings=OpcacheFindings(
            {ScriptProblem.OUTSIDE_RELEASE: scripts}))
        try:
            done = await Invalidate(self._actions()).run(ctx.pool.name, only, False)
        except ActionError as exc:
            record.outcome.notes.append(f"cannot invalidate the old release's scripts again: {exc}")
            return
        record.outcome.notes.extend(f"{d} again (cached again by a request running the old release)"
                                    for d in done.done)

    # --- after verify ------------------------------------------------------------------------------

    async def _remove_orphans(self, ctx: _Context, record: PhaseRecord) -> None:
        if record.result != "verified":
            return
        observation = await self._measure("views", ctx.laravel.name)
        if observation is not None and view_findings(observation).orphaned:
            removed = await RemoveOrphans(self._actions()).run(ctx.laravel.name, observation, False)
            record.outcome.notes.extend(removed.done)
            record.outcome.notes.extend(f"left alone: {r}" for r in removed.refused)
            record.outcome.notes.extend(f"error: {e}" for e in removed.errors)

    async def _rollback(self, run: DeployRun, req: DeployRequest) -> None:
        assert req.rollback_command is not None
        record = PhaseRecord("rollback")
        started = time.monotonic()
        if run.dry_run:
            record.outcome.done.append(f"would run {list(req.rollback_command)}")
        else:
            cmd = WarmCommand(argv=list(req.rollback_command), timeout=COMMAND_TIMEOUT)
            await run_command(self.config, cmd, "/", record.outcome)
        record.result = "ok" if record.outcome.ok else "failed"
        record.duration = time.monotonic() - started
        run.records.append(record)
        run.note = "rolled back" if record.outcome.ok else "the rollback command failed"
        await self.audit.event("deploy_phase", {"run_id": run.id, "target": run.target, **record.as_dict()})


def _merge(into: ActionOutcome, other: ActionOutcome) -> None:
    into.done.extend(other.done)
    into.refused.extend(other.refused)
    into.errors.extend(other.errors)
    into.notes.extend(other.notes)


def _result(run: DeployRun) -> str:
    results = [r.result for r in run.records]
    if "failed" in results or (run.dry_run and any(r.outcome.errors for r in run.records)):
        return "failed"
    if run.dry_run:
        return "dry_run"
    if "verify" not in run.phases:
        # `--phases prepare` before the pipeline's switch: nothing failed, nothing was verified yet.
        return "unverified" if "needs_restart" in results else "done"
    return "verified" if "verified" in results and "needs_restart" not in results else "unverified"

