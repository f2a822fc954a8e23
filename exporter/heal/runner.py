"""Deciding what to do with an alert or a manual request, and running it step by step.

One code path serves the webhook, manual calls and `cachewarden heal`: admit (plan, exact target,
dedup, ineffective, locks, cooldown), then measure afresh, run the plan's steps gentlest first,
re-measure after each, stop as soon as the condition is gone, and record and audit the run.

Admission asks the store (Redis with heal.redis_url) and fails as a whole when the store cannot answer
(the caller answers 503), leaving nothing claimed (`claims`). Once a run is admitted, the store no longer
decides anything about it: its result is what its actions did, and its cleanup (locks, cooldowns, plan
accounting) is retried in the background when the store fails (`backlog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.collectors.base import Observation
from exporter.config import Config, HealCondition
from exporter.heal.actions import build_actions
from exporter.heal.actions.base import Action, ActionContext, ActionError, NeedsRestart
from exporter.heal.actions.safety import CompiledRoots
from exporter.heal.audit import Audit, HealMetrics
from exporter.heal.backlog import StoreBacklog
from exporter.heal.claims import ADMIT_WITHIN, GIVEN_UP_FOR, Claims
from exporter.heal.dedup import Deduplicator, occurrence_key
from exporter.heal.feasibility import judge
from exporter.heal.locks import ActionLocks
from exporter.heal.names import ACTIONS, PARAMETERS, RESTART_ONLY, check_args, operation
from exporter.heal.phpexec import PhpExecutor
from exporter.heal.plans import (
    action_conditions,
    applicable,
    cleared,
    resolve_plans,
    unmet,
    unmet_metrics,
)
from exporter.heal.runs import Run, StepRecord
from exporter.heal.store import STORE_ERRORS, Store, StoreUnavailable
from exporter.heal.webhook import Alert
from exporter.php.pools import FpmPools
from exporter.scheduler import Scheduler

log = logging.getLogger(__name__)

# How often cachewarden_heal_ineffective is recounted from the store (at most the window itself).
INEFFECTIVE_REFRESH = 30.0
BACKLOG_DRAIN = 5.0  # seconds the store is given at shutdown to take the writes still queued


class Rejected(Exception):
    """A manual request that names no known action or target (HTTP 400 / exit 2)."""


class NotRun(Exception):
    """A manual run that was not started: locked, cooling down or ineffective (HTTP 409 / exit 1)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        super().__init__(run.result)


@dataclass(frozen=True, slots=True)
class Decision:
    alertname: str
    target: str | None
    fingerprint: str
    decision: str  # one of audit.ALERT_DECISIONS
    run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"alertname": self.alertname, "target": self.target, "fingerprint": self.fingerprint,
                "decision": self.decision, "run_id": self.run_id}


@dataclass(slots=True)
class TargetHeal:
    """What `heal_target` did: the plans it ran (or was refused) and the measurements it could not take."""

    target: str
    runs: list[Run] = field(default_factory=list)
    unmeasured: dict[str, str] = field(default_factory=dict)  # kind -> why

    @property
    def result(self) -> str:
        """verified, already_healthy or dry_run when every run succeeded (and all was measured);
        else the first other result: a refusal (locked, cooldown, ineffective), failed, unverified, …"""
        for run in self.runs:
            if not run.succeeded:
                return run.result or "failed"
        if self.unmeasured:
            return "unmeasured"
        results = {r.result for r in self.runs}
        if not results:
            return "already_healthy"
        return "dry_run" if "dry_run" in results else "verified"

    @property
    def succeeded(self) -> bool:
        return self.result in ("verified", "already_healthy", "dry_run")

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "result": self.result, "unmeasured": self.unmeasured,
                "runs": [r.as_dict() for r in self.runs]}


def targets_of(config: Config, section: str) -> list[str]:
    targets: list[Any] = getattr(config, section)
    return [t.name for t in targets]


class HealRunner:
    def __init__(self, config: Config, scheduler: Scheduler, store: Store, *,
                 pools: FpmPools | None = None, php: PhpExecutor | None = None,
                 audit: Audit | None = None, clock: Callable[[], float] = time.time) -> None:
        """`pools` is the PHP-FPM registry the collectors use (exporter.heal.assembly hands it in);
        `php` replaces the way PHP is run (tests), `audit` the audit (default: to the store's stream)."""
        heal = config.heal
        self.config = config
        self.scheduler = scheduler
        self.store = store
        self.plans = resolve_plans(heal)
        self.php = php or PhpExecutor(config, pools)
        self.feasibility = judge(config, self.plans, heal.enabled)
        self.actions: dict[str, Action] = build_actions(ActionContext(
            config, self.php, CompiledRoots(config.laravel)))
        self.metrics = HealMetrics(
            {a: targets_of(config, info.section) for a, info in ACTIONS.items()},
            {p: targets_of(config, ACTIONS[plan.steps[0]].section) for p, plan in self.plans.items()},
        )
        # The audit stream lives in the store's Redis, whoever builds the runner (serve or the CLI).
        self.audit = audit or Audit(self.metrics, store.client)
        self.backlog = StoreBacklog(store, self.metrics.store_failures)
        self.metrics.store_pending_writes = self.backlog.__len__
        self.dedup = Deduplicator(heal.dedup_ttl)
        self.locks = ActionLocks(store, self.backlog, heal.lock_ttl, heal.cooldown, heal.instance)
        self._clock = clock
        self.ineffective_refresh = INEFFECTIVE_REFRESH  # seconds between recounts from the store
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- what is known -------------------------------------------------------------------------

    def recent_runs(self) -> list[Run]:
        return list(reversed(self._runs.values()))

    def run(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def _remember(self, run: Run) -> None:
        self._runs[run.id] = run
        while len(self._runs) > self.config.heal.recent_runs:
            self._runs.popitem(last=False)

    def _target_ok(self, action: str, target: str | None) -> bool:
        # Exact match against the configuration: a label is never turned into a path.
        return target is not None and target in targets_of(self.config, ACTIONS[action].section)

    # --- admission -------------------------------------------------------------------------------

    async def accept_alert(self, alert: Alert, requested_by: str) -> Decision:
        """Decide for one alert and, if it is to be acted on, start its run in the background."""
        def decided(decision: str, run_id: str | None = None) -> Decision:
            self.metrics.alerts[decision] += 1
            return Decision(alert.alertname, alert.target, alert.fingerprint, decision, run_id)

        if not alert.firing:
            return decided("resolved")
        instance = self.config.heal.instance
        if instance is not None and alert.instance is not None and alert.instance != instance:
            # Another host's alert: its own sidecar heals it. Not marked seen, so that sidecar can.
            return decided("other_instance")
        plan = self.plans.get(alert.alertname)
        if plan is None:
            return decided("no_plan")
        if not self._target_ok(plan.steps[0], alert.target):
            return decided("unknown_target")
        assert alert.target is not None
        if not self.config.heal.enabled:
            return decided("disabled")
        run = Run(alert.target, list(plan.steps), self.config.heal.dry_run, requested_by,
                  plan=alert.alertname, args=dict(plan.args), fingerprint=alert.fingerprint,
                  starts_at=alert.starts_at)
        refusal = await self._admit(run, alert)
        if refusal == "duplicate":
            return decided("duplicate")
        if refusal is not None:
            await self._refused(run, refusal)
            return decided(refusal, run.id)
        self._remember(run)
        task = asyncio.create_task(self._execute(run), name=f"heal-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return decided("started", run.id)

    async def run_action(self, action: str, target: str, dry_run: bool, requested_by: str,
                         args: Mapping[str, str] | None = None) -> Run:
        """A manual run of one action with its arguments (names.PARAMETERS), awaited to its end."""
        if action not in self.actions:
            raise Rejected(f"unknown action {action!r}; known: {sorted(self.actions)}")
        if not self._target_ok(action, target):
            raise Rejected(f"no {ACTIONS[action].section} target named {target!r}")
        try:
            check_args(action, args or {})
        except ValueError as exc:
            raise Rejected(str(exc)) from None
        run = Run(target, [action], dry_run or self.config.heal.dry_run, requested_by, args=dict(args or {}))
        refusal = await self._admit(run, None)
        if refusal is not None:
            await self._refused(run, refusal)
            raise NotRun(run)
        self._remember(run)
        await self._execute(run)
        return run

    async def heal_target(self, target: str, dry_run: bool, requested_by: str) -> TargetHeal:
        """Run, one after another and each verified, the plans for whatever is wrong with `target` now.

        Each kind of measurement the target has (views for a Laravel app, OPcache for a pool, …) is
        taken afresh; the first plan whose condition it shows unmet runs (under the plan's name, with its
        locks, cooldowns and accounting), then the target is measured again and the next unmet plan
        runs. A plan runs at most once per request, so a fix that one plan's run made also clears the
        plans after it without running them. Raises Rejected for a target no section names.
        """
        sections = [s for s in ("laravel", "php_fpm") if target in targets_of(self.config, s)]
        if not sections:
            raise Rejected(f"no laravel or php_fpm target named {target!r}")
        dry_run = dry_run or self.config.heal.dry_run
        by_kind: dict[str, list[str]] = {}
        for name, plan in self.plans.items():
            info = ACTIONS[plan.steps[0]]
            if info.section in sections and info.measures is not None:
                by_kind.setdefault(info.measures, []).append(name)
        out = TargetHeal(target)
        for kind, names in by_kind.items():
            tried: set[str] = set()
            while True:
                observation, why = await self._look(kind, target)
                if observation is None:
                    out.unmeasured[kind] = why
                    break
                wanted = [n for n in names if n not in tried
                          and unmet_metrics(self.plans[n].clear_when, observation)]
                if not wanted:
                    break
                name = wanted[0]
                tried.add(name)
                plan = self.plans[name]
                run = Run(target, list(plan.steps), dry_run, requested_by, plan=name, args=dict(plan.args))
                refusal = await self._admit(run, None)
                if refusal is not None:
                    await self._refused(run, refusal)
                else:
                    self._remember(run)
                    await self._execute(run)
                out.runs.append(run)
        return out

    async def _look(self, kind: str, target: str) -> tuple[Observation | None, str]:
        try:
            status = await self.scheduler.collect(kind, target)
        except KeyError:
            return None, f"no {kind} collector for {target!r}"
        if not status.up or status.observation is None:
            return None, f"the {kind} collector failed on {target!r}: {status.error}"
        return status.observation, ""

    async def _admit(self, run: Run, alert: Alert | None) -> str | None:
        """None when `run` may start, else why not: duplicate, ineffective, locked or cooldown.

        Raises one of STORE_ERRORS when the store cannot decide within ADMIT_WITHIN; whatever this
        admission claimed, or may have claimed, is then given back (`Claims.abandon`).
        """
        claims = Claims(self.store, self.backlog, run.id)
        try:
            async with asyncio.timeout(ADMIT_WITHIN):
                refusal = await self._decide(run, alert, claims)
        except BaseException as exc:
            if isinstance(exc, STORE_ERRORS):
                self.metrics.store_failures["admit"] += 1
            claims.abandon()
            raise
        if refusal in ("locked", "cooldown"):
            # Not acted on: the occurrence and the locks are given back, so a later resend may act.
            await claims.release()
        elif refusal in (None, "ineffective") and not await claims.confirm():
            # Another admission took our claims over (ours outlived STALE_AFTER): let the caller retry.
            await claims.release()
            raise StoreUnavailable("the heal's claims were taken over before they were confirmed")
        return refusal

    async def _decide(self, run: Run, alert: Alert | None, claims: Claims) -> str | None:
        # A dry run changes nothing, so it does not use up the occurrence: the real run may follow.
        if alert is not None and not run.dry_run and \
                not await self.dedup.first_delivery(claims, alert.fingerprint, alert.starts_at):
            return "duplicate"
        if run.plan is not None and await self._ineffective(run.plan, run.target):
            return "ineffective"  # the occurrence stays claimed: its resends are duplicates
        if run.dry_run:
            return None  # a dry run changes nothing, so it needs neither lock nor cooldown
        if not await self.locks.acquire(claims, run.operations, run.target):
            return "locked"
        # Read once here, while the locks keep every other run off these actions: the run itself then
        # needs no answer from the store to decide which steps to skip.
        run.cooling = {s for s in set(run.steps)
                       if await self.locks.cooling_down(operation(s, run.args), run.target)}
        if len(run.cooling) == len(set(run.steps)):
            return "cooldown"
        return None

    async def _refused(self, run: Run, why: str) -> None:
        run.state, run.result, run.finished_at = "finished", why, self._clock()
        if why in ("cooldown", "ineffective"):
            self.metrics.runs[(run.target, run.steps[0], why)] += 1
        await self.audit.event("heal_refused", _audit_fields(run))

    # --- ineffective plans -------------------------------------------------------------------------

    def _events_key(self, plan: str, target: str) -> str:
        return f"uncleared:{plan}:{target}"

    async def _ineffective(self, plan: str, target: str) -> bool:
        heal = self.config.heal
        key = self._events_key(plan, target)
        n = await self.store.count_events(key, self._clock(), heal.ineffective_window)
        stuck = n >= heal.ineffective_runs
        self.metrics.ineffective[(target, plan)] = stuck
        return stuck

    async def refresh_ineffective(self) -> None:
        """Recount every plan's failures within the window from the store.

        A plan stays ineffective only while its failures lie within the window, and the store may be
        shared with other sidecars: the gauge must follow the store, not this process's last verdict.
        """
        for target, plan in list(self.metrics.ineffective):
            await self._ineffective(plan, target)

    async def refresh_ineffective_forever(self) -> None:
        interval = min(self.ineffective_refresh, self.config.heal.ineffective_window)
        while True:
            try:
                await self.refresh_ineffective()
            except STORE_ERRORS as exc:  # the store may come back; the gauge keeps its last value
                log.warning("cannot recount ineffective heal plans: %s", type(exc).__name__)
            await asyncio.sleep(interval)

    async def _clear_events(self, plan: str, target: str) -> None:
        key = self._events_key(plan, target)

        async def write() -> None:
            await self.store.clear_events(key)

        # Queued under its own name, so that a later failure's event is retried after it, not instead.
        await self.backlog.attempt(f"{key}@clear", "account", write, self.config.heal.ineffective_window)

    async def _account_plan(self, run: Run) -> None:
        """Count the run for its plan's ineffective state; never raises (a failed write is retried)."""
        if run.plan is None:
            if run.verified:
                # A person fixed it by hand with the same first step: the plans starting with it get
                # another chance on this target.
                for name, plan in self.plans.items():
                    if plan.steps[0] == run.steps[0]:
                        await self._clear_events(name, run.target)
                        if (run.target, name) in self.metrics.ineffective:
                            self.metrics.ineffective[(run.target, name)] = False
            return
        if run.verified or run.result == "already_healthy":
            await self._clear_events(run.plan, run.target)
            self.metrics.ineffective[(run.target, run.plan)] = False
        elif run.result in ("unverified", "failed"):
            heal = self.config.heal
            key, at, counted = self._events_key(run.plan, run.target), self._clock(), [0]

            async def write() -> None:  # the same `at` when retried: the event is recorded once
                counted[0] = await self.store.add_event(key, at, heal.ineffective_window)

            # When the write waits in the backlog, the periodic recount sets the gauge once it lands.
            if await self.backlog.attempt(f"{key}@{at!r}", "account", write, heal.ineffective_window) \
                    and counted[0] >= heal.ineffective_runs:
                self.metrics.ineffective[(run.target, run.plan)] = True
                log.warning("heal plan %s on %s did not clear its condition %d times within %gs; "
                            "it is no longer acted on", run.plan, run.target, counted[0],
                            heal.ineffective_window)

    # --- execution ---------------------------------------------------------------------------------

    async def _measure(self, kind: str | None, target: str, run: Run) -> Observation | None:
        if kind is None:
            return None
        try:
            status = await self.scheduler.collect(kind, target)
        except KeyError:
            run.note = f"no {kind} collector for {target!r}: results cannot be verified"
            return None
        if not status.up:
            run.note = f"the {kind} collector failed on {target!r}: {status.error}"
        return status.observation if status.up else None

    def _conditions(self, run: Run) -> list[HealCondition]:
        if run.plan is not None:
            return self.plans[run.plan].clear_when
        return action_conditions(run.steps[0], run.args)

    async def _execute(self, run: Run) -> None:
        run.state = "running"
        await self.audit.event("heal_started", _audit_fields(run))
        interrupted = False
        try:
            await self._steps(run)
        except asyncio.CancelledError:
            run.result, run.note, interrupted = "failed", "interrupted by shutdown", True
            raise
        except Exception as exc:  # a bug in one run must not take the sidecar down
            log.exception("heal run %s failed", run.id)
            run.result, run.note = "failed", f"internal error: {type(exc).__name__}"
            interrupted = True
        finally:
            run.state, run.finished_at = "finished", self._clock()
            self.metrics.runs[(run.target, run.steps[0], run.result or "failed")] += 1
            if not run.dry_run:
                # Neither raises on a store failure: the result stands and the writes are retried.
                await asyncio.shield(self.locks.release(run.operations, run.target, run.id))
                await asyncio.shield(self._account_plan(run))
                if interrupted:
                    await asyncio.shield(self._give_back_occurrence(run))
            await asyncio.shield(self.audit.event("heal_finished", _audit_fields(run)))

    async def _give_back_occurrence(self, run: Run) -> None:
        """Release the alert occurrence of a run that a shutdown or a fault of cachewarden's ended
        before it could judge its target: Alertmanager's next resend acts again instead of being a
        `duplicate` of a run that never finished (a step that did change something has started its
        cooldown). Never raises: a release the store cannot take now is retried."""
        if run.fingerprint is None or run.starts_at is None:
            return
        key = occurrence_key(run.fingerprint, run.starts_at)

        async def write() -> None:
            await self.store.release(key, run.id)

        await self.backlog.attempt(key, "release", write, GIVEN_UP_FOR, run.id)

    async def _steps(self, run: Run) -> None:
        kind = ACTIONS[run.steps[0]].measures
        conditions = self._conditions(run)
        observation = await self._measure(kind, run.target, run)
        if run.plan is None:
            conditions = applicable(conditions, observation)
        # A manual run that names its work (cache=routes) does it on a healthy target too.
        explicit = run.plan is None and self.actions[run.steps[0]].explicit(run.args)
        if kind is not None and cleared(conditions, observation) and not explicit:
            run.result = "already_healthy"
            return
        if observation is not None:
            blocked = self._unclearable(run, conditions, observation)
            if blocked is not None:
                run.result, run.note = blocked
                return
        any_ran = False
        for step in run.steps:
            record = StepRecord(step, "unverified")
            run.records.append(record)
            started = time.monotonic()
            wanted = unmet_metrics(conditions, observation) if observation is not None else []
            if wanted and not set(wanted) & self.actions[step].can_clear(run.target, observation):
                # It cannot change what is left to fix: running it would only disturb the target.
                record.result, record.unmet = "skipped", wanted
                self.metrics.steps[(run.target, step, "skipped")] += 1
                continue
            if not run.dry_run and step in run.cooling:
                record.result = "cooldown"
                self.metrics.steps[(run.target, step, "cooldown")] += 1
                continue
            try:
                args = {k: v for k, v in run.args.items() if k in PARAMETERS.get(step, {})}
                record.outcome = await self.actions[step].run_with(run.target, observation, run.dry_run, args)
            except NeedsRestart as exc:
                record.result, record.error = "needs_restart", str(exc)
            except ActionError as exc:
                record.result, record.error = "failed", str(exc)
            except OSError as exc:
                record.result, record.error = "failed", f"{type(exc).__name__}: {exc.strerror or exc}"
            if record.error is None and run.dry_run:
                record.result = "dry_run"
            elif record.error is None and record.outcome is not None:
                any_ran = True
                if record.outcome.done:
                    await self.locks.start_cooldown(operation(step, run.args), run.target)
                if kind is None:
                    run.verified = record.outcome.ok
                else:
                    observation = await self._measure(kind, run.target, run)
                    run.verified = cleared(conditions, observation)
                    record.unmet = unmet(conditions, observation)
                if run.verified:
                    record.result = "verified"
                elif not record.outcome.ok:
                    record.result = "failed"
            record.duration = time.monotonic() - started
            self.metrics.steps[(run.target, step, record.result)] += 1
            self.metrics.durations[(run.target, step)] = record.duration
            if run.verified:
                break
        if any(r.result == "needs_restart" for r in run.records) and not run.verified:
            run.result = "needs_restart"
        elif run.dry_run:
            # A dry run that could not even plan a step (no PHP, unreadable directory) has failed:
            # the real run would fail the same way.
            run.result = "failed" if any(r.error for r in run.records) else "dry_run"
        elif run.verified:
            run.result = "verified"
        else:
            run.result = "unverified" if any_ran else "failed"

    def _unclearable(self, run: Run, conditions: list[HealCondition],
                     observation: Observation) -> tuple[str, str] | None:
        """(result, note) when a measured, unmet condition is one no step of the run can clear."""
        wanted = unmet_metrics(conditions, observation)
        can: set[str] = set()
        for step in run.steps:
            can |= self.actions[step].can_clear(run.target, observation)
        left = [m for m in wanted if m not in can]
        if not left:
            return None
        if all(m in RESTART_ONLY for m in left):
            return "needs_restart", (
                f"{', '.join(left)}: only a restart of PHP-FPM replaces preloaded code; set "
                f"php_fpm[].restart_command for {run.target!r} to let fpm.reload do it, or restart FPM "
                "by hand")
        return "not_clearable", f"no step of {run.steps} can clear {', '.join(left)}; nothing was run"

    async def close(self) -> None:
        """Cancel runs still in progress, then give the store a moment to take their cleanup."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.backlog.close(BACKLOG_DRAIN)

    async def wait_idle(self) -> None:
        """Wait for every background run to finish (tests and the benchmark use it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _audit_fields(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.id, "who": run.requested_by, "plan": run.plan, "steps": run.steps,
        "args": run.args, "target": run.target, "fingerprint": run.fingerprint, "starts_at": run.starts_at,
        "dry_run": run.dry_run, "state": run.state, "result": run.result, "verified": run.verified,
        "duration_seconds": round(run.duration, 6), "note": run.note,
        "step_results": [{"action": r.action, "result": r.result, "done": len(r.outcome.done)
                          if r.outcome else 0, "error": r.error} for r in run.records],
    }
