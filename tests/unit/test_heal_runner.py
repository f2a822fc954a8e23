"""The runner with scripted collectors and actions: escalation, early stop, ineffective plans, locks."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from exporter.collectors.base import Collector, Observation
from exporter.config import Config
from exporter.heal.actions.base import Action, ActionContext, ActionOutcome
from exporter.heal.runner import HealRunner, NotRun
from exporter.heal.store import ClaimState, MemoryStore, StoreUnavailable
from exporter.heal.webhook import Alert
from exporter.metrics import gauge
from exporter.scheduler import Scheduler
from tests.support.healing import heal_config, make_app_dir

STALE = gauge("cachewarden_views_stale", "scripted")
UNCOMPILED = gauge("cachewarden_views_uncompiled", "scripted")  # a manual views.recompile checks it too


class ScriptedViews(Collector):
    """A views collector whose `cachewarden_views_stale` value the test sets."""

    kind = "views"
    metrics = (STALE, UNCOMPILED)

    def __init__(self, stale: float) -> None:
        super().__init__("shop", interval=60, timeout=5)
        self.stale = stale

    async def collect(self) -> Observation:
        s = self.new_samples()
        s.add(STALE, self.stale)
        s.add(UNCOMPILED, 0)
        return Observation(s)


class ScriptedAction(Action):
    """Records its calls; sets the collector's value to `fixes_to` (None: changes nothing)."""

    def __init__(self, name: str, ctx: ActionContext, views: ScriptedViews, fixes_to: float | None,
                 gate: asyncio.Event | None = None,
                 clears: frozenset[str] = frozenset({STALE.name, UNCOMPILED.name})) -> None:
        super().__init__(ctx)
        self.name = name  # type: ignore[misc]
        self.views, self.fixes_to, self.gate, self.clears = views, fixes_to, gate, clears
        self.calls: list[bool] = []

    def can_clear(self, target: str, observation: Observation | None) -> frozenset[str]:
        return self.clears

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        self.calls.append(dry_run)
        if self.gate is not None:
            await self.gate.wait()
        if not dry_run and self.fixes_to is not None:
            self.views.stale = self.fixes_to
        return ActionOutcome(done=["did it"])


def plan_config(tmp_path: Path, **heal: Any) -> Config:
    return heal_config(make_app_dir(tmp_path / "shop"), None, plans={
        "Stale": {"steps": ["views.recompile", "views.remove_orphans"],
                  "clear_when": [{"metric": "cachewarden_views_stale", "max": 0}]}}, **heal)


def runner_with(config: Config, views: ScriptedViews, store: MemoryStore | None = None,
                **actions: float | None) -> tuple[HealRunner, dict[str, ScriptedAction]]:
    runner = HealRunner(config, Scheduler([views]), store or MemoryStore())
    ctx = next(iter(runner.actions.values())).ctx
    scripted = {name: ScriptedAction(name, ctx, views, fix) for name, fix in actions.items()}
    runner.actions.update(scripted)
    return runner, scripted


def firing(starts_at: str = "t0") -> Alert:
    return Alert("firing", "Stale", "shop", "fp", starts_at)


async def test_plan_stops_after_the_first_step_that_clears_the_condition(tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    runner, acts = runner_with(plan_config(tmp_path), views,
                               **{"views.recompile": 0, "views.remove_orphans": 0})

    decision = await runner.accept_alert(firing(), "test")
    await runner.wait_idle()

    run = runner.run(decision.run_id or "")
    assert run is not None
    assert run.result == "verified"
    assert [r.action for r in run.records] == ["views.recompile"]
    assert acts["views.remove_orphans"].calls == []


async def test_plan_escalates_only_when_the_gentle_step_did_not_clear(tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    runner, _ = runner_with(plan_config(tmp_path), views,
                            **{"views.recompile": None, "views.remove_orphans": 0})

    decision = await runner.accept_alert(firing(), "test")
    await runner.wait_idle()

    run = runner.run(decision.run_id or "")
    assert run is not None
    assert run.result == "verified"
    assert [(r.action, r.result) for r in run.records] == [("views.recompile", "unverified"),
                                                           ("views.remove_orphans", "verified")]
    assert run.records[0].unmet == ["cachewarden_views_stale=3"]


async def test_a_step_that_cannot_clear_what_is_left_is_skipped_not_run(tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    runner, acts = runner_with(plan_config(tmp_path), views,
                               **{"views.recompile": None, "views.remove_orphans": 0})
    acts["views.remove_orphans"].clears = frozenset({"cachewarden_views_orphaned"})

    decision = await runner.accept_alert(firing(), "test")
    await runner.wait_idle()

    run = runner.run(decision.run_id or "")
    assert run is not None
    assert run.result == "unverified"
    assert [(r.action, r.result) for r in run.records] == [("views.recompile", "unverified"),
                                                           ("views.remove_orphans", "skipped")]
    assert acts["views.remove_orphans"].calls == []


async def test_a_finding_no_step_can_clear_ends_the_run_before_any_step(tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    runner, acts = runner_with(plan_config(tmp_path), views,
                               **{"views.recompile": 0, "views.remove_orphans": 0})
    for act in acts.values():
        act.clears = frozenset({"cachewarden_views_orphaned"})

    for n in range(3):  # every delivery ends the same way, and none counts towards "ineffective"
        decision = await runner.accept_alert(firing(f"t{n}"), "test")
        await runner.wait_idle()
        run = runner.run(decision.run_id or "")
        assert run is not None
        assert run.result == "not_clearable"
        assert run.records == []
        assert "cachewarden_views_stale" in (run.note or "")
    assert all(act.calls == [] for act in acts.values())
    assert not any(runner.metrics.ineffective.values())


async def test_already_healthy_target_runs_no_step(tmp_path: Path) -> None:
    views = ScriptedViews(stale=0)
    runner, acts = runner_with(plan_config(tmp_path), views, **{"views.recompile": 0})

    decision = await runner.accept_alert(firing(), "test")
    await runner.wait_idle()

    assert runner.run(decision.run_id or "").result == "already_healthy"  # type: ignore[union-attr]
    assert acts["views.recompile"].calls == []


async def test_plan_that_never_clears_becomes_ineffective_and_stops_acting(tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    now = [0.0]
    store = MemoryStore(monotonic=lambda: now[0])
    config = plan_config(tmp_path, ineffective_runs=2, cooldown=10)
    runner, acts = runner_with(config, views, store,
                               **{"views.recompile": None, "views.remove_orphans": None})

    results = []
    for i in range(3):
        decision = await runner.accept_alert(firing(f"t{i}"), "test")
        await runner.wait_idle()
        results.append(decision.decision)
        now[0] += 11  # past the cooldown, on the store's clock

    assert results == ["started", "started", "ineffective"]
    assert len(acts["views.recompile"].calls) == 2
    assert runner.metrics.ineffective[("shop", "Stale")] is True


async def test_second_alert_for_a_target_being_healed_is_skipped_as_locked(tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    runner, acts = runner_with(plan_config(tmp_path), views, **{"views.recompile": 0})
    gate = asyncio.Event()
    acts["views.recompile"].gate = gate

    first = await runner.accept_alert(firing("a"), "test")
    second = await runner.accept_alert(Alert("firing", "Stale", "shop", "other", "b"), "test")
    gate.set()
    await runner.wait_idle()

    assert (first.decision, second.decision) == ("started", "locked")
    # The locked alert's dedup claim was given back, so its resend is acted on.
    third = await runner.accept_alert(Alert("firing", "Stale", "shop", "other", "b"), "test")
    await runner.wait_idle()
    assert third.decision in ("started", "cooldown")


async def test_manual_run_during_cooldown_is_not_run(tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    runner, _ = runner_with(plan_config(tmp_path), views, **{"views.recompile": 0})
    await runner.run_action("views.recompile", "shop", False, "test")
    views.stale = 3

    with pytest.raises(NotRun) as info:
        await runner.run_action("views.recompile", "shop", False, "test")

    assert info.value.run.result == "cooldown"


class LockOutage(MemoryStore):
    """A store that fails the next `failures` lock claims, the way Redis fails when it restarts."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def claim(self, key: str, token: str, ttl: float, *, stale_after: float,
                    abandoned: Collection[str] = ()) -> ClaimState:
        if key.startswith("lock:") and self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("ConnectionError")
        return await super().claim(key, token, ttl, stale_after=stale_after, abandoned=abandoned)


async def test_an_alert_whose_admission_failed_is_acted_on_when_retried(tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    runner, acts = runner_with(plan_config(tmp_path), views, LockOutage(failures=1),
                               **{"views.recompile": 0})

    with pytest.raises(StoreUnavailable):
        await runner.accept_alert(firing(), "test")
    retry = await runner.accept_alert(firing(), "test")
    await runner.wait_idle()

    assert retry.decision == "started"
    assert acts["views.recompile"].calls == [False]


async def test_a_dry_run_does_not_use_up_the_alert_occurrence(tmp_path: Path) -> None:
    store = MemoryStore()
    dry, _ = runner_with(plan_config(tmp_path, dry_run=True), ScriptedViews(stale=3), store,
                         **{"views.recompile": 0})
    real, acts = runner_with(plan_config(tmp_path / "real"), ScriptedViews(stale=3), store,
                             **{"views.recompile": 0})

    assert (await dry.accept_alert(firing(), "test")).decision == "started"
    await dry.wait_idle()
    assert (await real.accept_alert(firing(), "test")).decision == "started"
    await real.wait_idle()
    assert acts["views.recompile"].calls == [False]


def on(instance: str | None, starts_at: str = "t0") -> Alert:
    return Alert("firing", "Stale", "shop", "fp", starts_at, instance=instance)


async def test_an_alert_about_another_instance_is_left_to_that_hosts_sidecar(tmp_path: Path) -> None:
    store = MemoryStore()
    web1, acts1 = runner_with(plan_config(tmp_path / "1", instance="web-1:9590"), ScriptedViews(stale=3),
                              store, **{"views.recompile": 0})
    web2, acts2 = runner_with(plan_config(tmp_path / "2", instance="web-2:9590"), ScriptedViews(stale=3),
                              store, **{"views.recompile": 0})

    assert (await web1.accept_alert(on("web-2:9590"), "am")).decision == "other_instance"
    # Not marked seen: the host the alert is about still acts on the same notification.
    assert (await web2.accept_alert(on("web-2:9590"), "am")).decision == "started"
    await web2.wait_idle()
    assert acts1["views.recompile"].calls == []
    assert acts2["views.recompile"].calls == [False]


async def test_hosts_of_a_fleet_lock_and_cool_down_their_own_targets(tmp_path: Path) -> None:
    store = MemoryStore()
    web1, _ = runner_with(plan_config(tmp_path / "1", instance="web-1:9590"), ScriptedViews(stale=3),
                          store, **{"views.recompile": 0})
    web2, acts2 = runner_with(plan_config(tmp_path / "2", instance="web-2:9590"), ScriptedViews(stale=3),
                              store, **{"views.recompile": 0})
    await web1.run_action("views.recompile", "shop", False, "test")  # web-1's "shop" now cools down

    await web2.run_action("views.recompile", "shop", False, "test")  # NotRun if it shared the cooldown

    assert acts2["views.recompile"].calls == [False]


async def test_an_alert_without_an_instance_label_is_acted_on(tmp_path: Path) -> None:
    runner, acts = runner_with(plan_config(tmp_path, instance="web-1:9590"), ScriptedViews(stale=3),
                               **{"views.recompile": 0})
    assert (await runner.accept_alert(on(None), "am")).decision == "started"
    await runner.wait_idle()
    assert acts["views.recompile"].calls == [False]


async def test_audit_lines_on_stderr_are_bare_json_documents(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What `cachewarden serve` installs on the root logger: every line prefixed.
    prefixed = logging.StreamHandler()
    prefixed.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(prefixed)
    try:
        runner, _ = runner_with(plan_config(tmp_path), ScriptedViews(stale=3), **{"views.recompile": 0})
        await runner.accept_alert(firing(), "test")
        await runner.wait_idle()
    finally:
        logging.getLogger().removeHandler(prefixed)

    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    events = [json.loads(line)["event"] for line in lines]  # fails on any prefix
    assert events == ["heal_started", "heal_finished"]


def failing_plan_runner(tmp_path: Path) -> tuple[HealRunner, dict[str, ScriptedAction], list[float]]:
    """A plan that never clears, made ineffective by two runs; `now` drives the runner and the store."""
    now = [1000.0]
    config = plan_config(tmp_path, ineffective_runs=2, ineffective_window=100, cooldown=10)
    views = ScriptedViews(stale=3)
    runner, acts = runner_with(config, views, MemoryStore(monotonic=lambda: now[0]),
                               **{"views.recompile": None, "views.remove_orphans": None})
    runner._clock = lambda: now[0]
    return runner, acts, now


async def make_ineffective(runner: HealRunner, now: list[float]) -> None:
    for i in range(2):
        await runner.accept_alert(firing(f"t{i}"), "test")
        await runner.wait_idle()
        now[0] += 11  # past the cooldown
    assert runner.metrics.ineffective[("shop", "Stale")] is True


async def test_an_ineffective_plan_is_cleared_once_its_failures_leave_the_window(tmp_path: Path) -> None:
    runner, _, now = failing_plan_runner(tmp_path)
    await make_ineffective(runner, now)

    await runner.refresh_ineffective()
    assert runner.metrics.ineffective[("shop", "Stale")] is True
    now[0] += 100
    await runner.refresh_ineffective()

    assert runner.metrics.ineffective[("shop", "Stale")] is False
    assert (await runner.accept_alert(firing("later"), "test")).decision == "started"
    await runner.wait_idle()


async def test_a_verified_manual_run_of_the_first_step_clears_the_ineffective_plan(tmp_path: Path) -> None:
    runner, acts, now = failing_plan_runner(tmp_path)
    await make_ineffective(runner, now)
    acts["views.recompile"].fixes_to = 0

    run = await runner.run_action("views.recompile", "shop", False, "test")

    assert run.result == "verified"
    assert runner.metrics.ineffective[("shop", "Stale")] is False
    acts["views.recompile"].views.stale = 3
    now[0] += 11
    assert (await runner.accept_alert(firing("later"), "test")).decision == "started"
    await runner.wait_idle()


async def test_a_failed_manual_run_leaves_the_ineffective_plan_alone(tmp_path: Path) -> None:
    runner, _, now = failing_plan_runner(tmp_path)
    await make_ineffective(runner, now)

    run = await runner.run_action("views.recompile", "shop", False, "test")

    assert run.result == "unverified"
    assert runner.metrics.ineffective[("shop", "Stale")] is True


async def test_a_run_is_counted_once_with_its_result_and_each_step_on_its_own(tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    runner, _ = runner_with(plan_config(tmp_path), views,
                            **{"views.recompile": None, "views.remove_orphans": 0})

    await runner.accept_alert(firing(), "test")
    await runner.wait_idle()

    runs = {k: n for k, n in runner.metrics.runs.items() if n}
    steps = {k: n for k, n in runner.metrics.steps.items() if n}
    assert runs == {("shop", "views.recompile", "verified"): 1}
    assert steps == {("shop", "views.recompile", "unverified"): 1,
                     ("shop", "views.remove_orphans", "verified"): 1}


class BrokenAction(ScriptedAction):
    """Fails with an exception no action may raise: a fault of cachewarden's, not of the target."""

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        self.calls.append(dry_run)
        raise RuntimeError("a bug")


async def test_a_run_ended_by_a_fault_of_its_own_leaves_its_alert_occurrence_unclaimed(
        tmp_path: Path) -> None:
    views = ScriptedViews(stale=3)
    runner, acts = runner_with(plan_config(tmp_path), views, **{"views.recompile": 0})
    broken = BrokenAction("views.recompile", acts["views.recompile"].ctx, views, None)
    runner.actions["views.recompile"] = broken

    first = await runner.accept_alert(firing(), "test")
    await runner.wait_idle()
    runner.actions["views.recompile"] = acts["views.recompile"]
    resent = await runner.accept_alert(firing(), "test")
    await runner.wait_idle()
    again = await runner.accept_alert(firing(), "test")

    failed = runner.run(first.run_id or "")
    assert failed is not None
    assert failed.note == "internal error: RuntimeError"
    assert (resent.decision, again.decision) == ("started", "duplicate")
    assert broken.calls == acts["views.recompile"].calls == [False]


async def test_a_run_interrupted_by_shutdown_leaves_its_alert_occurrence_unclaimed(tmp_path: Path) -> None:
    store = MemoryStore()
    gate = asyncio.Event()
    views = ScriptedViews(stale=3)
    first, acts = runner_with(plan_config(tmp_path), views, store, **{"views.recompile": 0})
    acts["views.recompile"].gate = gate
    assert (await first.accept_alert(firing(), "test")).decision == "started"
    await asyncio.sleep(0)  # the run is under way, waiting inside its step
    await first.close()
    later, _ = runner_with(plan_config(tmp_path / "later"), ScriptedViews(stale=3), store,
                           **{"views.recompile": 0})

    assert (await later.accept_alert(firing(), "test")).decision == "started"
