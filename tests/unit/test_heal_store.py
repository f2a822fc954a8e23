"""The heal store's claims and the cleanup backlog with in-process fakes: what a write whose outcome is
unknown leaves behind, and what a run does when the store fails while it runs.

The same behaviours on a real Redis frozen with SIGSTOP: tests/integration/test_heal_store_outage.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from pathlib import Path

import pytest

from exporter.heal.backlog import StoreBacklog, Write
from exporter.heal.claims import STALE_AFTER
from exporter.heal.dedup import occurrence_key
from exporter.heal.runner import NotRun
from exporter.heal.store import ClaimState, MemoryStore, StoreUnavailable
from exporter.heal.webhook import Alert
from tests.support.wait import async_wait_for
from tests.unit.test_heal_runner import ScriptedViews, firing, plan_config, runner_with

# --- the claim state machine -----------------------------------------------------------------------


async def test_a_claim_is_pending_until_confirmed_and_only_then_a_duplicate() -> None:
    store = MemoryStore()

    assert await store.claim("k", "a", 20, stale_after=10) == "claimed"
    assert await store.claim("k", "b", 20, stale_after=10) == "pending"
    assert await store.confirm("a", {"k": 600})
    assert await store.claim("k", "b", 20, stale_after=10) == "confirmed"


async def test_a_release_by_another_token_frees_nothing() -> None:
    store = MemoryStore()
    await store.claim("k", "a", 20, stale_after=10)

    await store.release("k", "b")

    assert await store.claim("k", "b", 20, stale_after=10) == "pending"
    await store.release("k", "a")
    assert await store.claim("k", "b", 20, stale_after=10) == "claimed"


async def test_a_stale_pending_claim_is_taken_over_and_its_late_confirmation_fails() -> None:
    now = [0.0]
    store = MemoryStore(monotonic=lambda: now[0])
    await store.claim("k", "gave-up", 20, stale_after=10)
    now[0] += 9.9
    assert await store.claim("k", "b", 20, stale_after=10) == "pending"

    now[0] += 0.2  # older than stale_after: its admission is over, whatever became of it
    assert await store.claim("k", "b", 20, stale_after=10) == "claimed"
    assert not await store.confirm("gave-up", {"k": 600})
    assert await store.confirm("b", {"k": 600})


async def test_a_confirmed_claim_is_never_stale_but_an_abandoned_one_is_taken_over() -> None:
    now = [0.0]
    store = MemoryStore(monotonic=lambda: now[0])
    await store.claim("k", "a", 20, stale_after=10)
    await store.confirm("a", {"k": 600})
    now[0] += 500

    assert await store.claim("k", "b", 20, stale_after=10) == "confirmed"
    assert await store.claim("k", "b", 20, stale_after=10, abandoned=["a"]) == "claimed"


async def test_a_confirmation_is_all_or_nothing() -> None:
    store = MemoryStore()
    await store.claim("dedup", "a", 20, stale_after=10)
    await store.claim("lock", "a", 20, stale_after=10)
    await store.release("lock", "a")

    assert not await store.confirm("a", {"dedup": 600, "lock": 600})
    assert await store.claim("dedup", "b", 20, stale_after=10) == "pending"  # not confirmed


async def test_a_pending_claim_expires_on_its_own() -> None:
    now = [0.0]
    store = MemoryStore(monotonic=lambda: now[0])
    await store.claim("k", "a", 20, stale_after=10)
    now[0] += 20

    assert not await store.exists("k")


async def test_an_event_recorded_twice_at_the_same_time_counts_once() -> None:
    store = MemoryStore()
    assert await store.add_event("e", 100.0, 60) == 1
    assert await store.add_event("e", 100.0, 60) == 1  # a retried write
    assert await store.add_event("e", 101.0, 60) == 2


# --- a store that fails --------------------------------------------------------------------------


class FlakyStore(MemoryStore):
    """A store that fails while `down`; with `lost_replies` it applies each write first, the way a
    frozen Redis applies the commands it received once it resumes, after the client gave up."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lost_replies = False
        self.calls: list[str] = []

    async def _fail(self, op: str) -> None:
        self.calls.append(op)
        if self.down:
            raise StoreUnavailable("TimeoutError")

    async def claim(self, key: str, token: str, ttl: float, *, stale_after: float,
                    abandoned: Collection[str] = ()) -> ClaimState:
        if self.down and self.lost_replies:
            await super().claim(key, token, ttl, stale_after=stale_after, abandoned=abandoned)
        await self._fail("claim")
        return await super().claim(key, token, ttl, stale_after=stale_after, abandoned=abandoned)

    async def confirm(self, token: str, ttls: Mapping[str, float]) -> bool:
        if self.down and self.lost_replies:
            await super().confirm(token, ttls)
        await self._fail("confirm")
        return await super().confirm(token, ttls)

    async def release(self, key: str, token: str) -> None:
        await self._fail("release")
        await super().release(key, token)

    async def exists(self, key: str) -> bool:
        await self._fail("exists")
        return await super().exists(key)

    async def put(self, key: str, ttl: float) -> None:
        await self._fail("put")
        await super().put(key, ttl)

    async def add_event(self, key: str, at: float, window: float) -> int:
        await self._fail("add_event")
        return await super().add_event(key, at, window)

    async def count_events(self, key: str, now: float, window: float) -> int:
        await self._fail("count_events")
        return await super().count_events(key, now, window)

    async def clear_events(self, key: str) -> None:
        await self._fail("clear_events")
        await super().clear_events(key)


async def test_an_alert_whose_claim_landed_unanswered_runs_once_when_redelivered(tmp_path: Path) -> None:
    store = FlakyStore()
    runner, acts = runner_with(plan_config(tmp_path), ScriptedViews(stale=3), store, **{"views.recompile": 0})
    store.down = store.lost_replies = True

    with pytest.raises(StoreUnavailable):
        await runner.accept_alert(firing(), "am")
    assert await MemoryStore.exists(store, occurrence_key("fp", "t0"))  # it landed, unconfirmed

    store.down = False
    retried = await runner.accept_alert(firing(), "am")
    await runner.wait_idle()
    third = await runner.accept_alert(firing(), "am")

    assert (retried.decision, third.decision) == ("started", "duplicate")
    assert acts["views.recompile"].calls == [False]
    assert runner.metrics.store_failures["admit"] == 1


async def test_another_processes_unconfirmed_claim_is_taken_over_once_stale(tmp_path: Path) -> None:
    # A sidecar that died (or whose write landed late) between its claim and its confirmation: not
    # this process's to release, so the claim is taken over once older than any admission can be.
    now = [0.0]
    store = MemoryStore(monotonic=lambda: now[0])
    runner, acts = runner_with(plan_config(tmp_path), ScriptedViews(stale=3), store, **{"views.recompile": 0})
    await store.claim(occurrence_key("fp", "t0"), "dead-sidecar", 20, stale_after=STALE_AFTER)
    now[0] += STALE_AFTER

    decision = await runner.accept_alert(firing(), "am")
    await runner.wait_idle()

    assert decision.decision == "started"
    assert acts["views.recompile"].calls == [False]


class GatedConfirm(MemoryStore):
    """Holds every confirmation until `gate` is set: an admission caught between claim and confirm."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.confirming = asyncio.Event()
        self.seen_pending = 0

    async def claim(self, key: str, token: str, ttl: float, *, stale_after: float,
                    abandoned: Collection[str] = ()) -> ClaimState:
        state = await super().claim(key, token, ttl, stale_after=stale_after, abandoned=abandoned)
        self.seen_pending += state == "pending"
        return state

    async def confirm(self, token: str, ttls: Mapping[str, float]) -> bool:
        self.confirming.set()
        await self.gate.wait()
        return await super().confirm(token, ttls)


async def test_a_delivery_that_meets_an_admission_in_progress_waits_for_it_and_is_a_duplicate(
        tmp_path: Path) -> None:
    store = GatedConfirm()
    runner, acts = runner_with(plan_config(tmp_path), ScriptedViews(stale=3), store, **{"views.recompile": 0})

    first = asyncio.create_task(runner.accept_alert(firing(), "am-1"))
    await store.confirming.wait()
    second = asyncio.create_task(runner.accept_alert(firing(), "am-2"))
    await async_wait_for(lambda: _seen_pending(store, 3), timeout=5, message="the second delivery waits")
    assert not second.done()  # it looked three times and did not answer
    store.gate.set()

    assert ((await first).decision, (await second).decision) == ("started", "duplicate")
    await runner.wait_idle()
    assert acts["views.recompile"].calls == [False]


async def test_a_confirmation_whose_reply_is_lost_lets_the_run_go_ahead(tmp_path: Path) -> None:
    store = FlakyStore()
    runner, _ = runner_with(plan_config(tmp_path), ScriptedViews(stale=3), store, **{"views.recompile": 0})
    confirm = store.confirm

    async def confirm_then_hang(token: str, ttls: Mapping[str, float]) -> bool:
        store.down = store.lost_replies = True  # applied, but the reply never comes
        return await confirm(token, ttls)

    store.confirm = confirm_then_hang  # type: ignore[method-assign]
    decision = await runner.accept_alert(firing(), "am")
    store.confirm = confirm  # type: ignore[method-assign]
    store.down = False
    await runner.wait_idle()

    assert decision.decision == "started"
    assert runner.run(decision.run_id or "").result == "verified"  # type: ignore[union-attr]
    assert (await runner.accept_alert(firing(), "am")).decision == "duplicate"


async def test_a_store_outage_during_a_run_keeps_its_result_and_frees_its_lock_when_the_store_returns(
        tmp_path: Path) -> None:
    store, views = FlakyStore(), ScriptedViews(stale=3)
    runner, acts = runner_with(plan_config(tmp_path), views, store, **{"views.recompile": 0})
    gate = asyncio.Event()
    acts["views.recompile"].gate = gate

    decision = await runner.accept_alert(firing(), "am")
    store.down = True  # while the step runs
    gate.set()
    await runner.wait_idle()

    run = runner.run(decision.run_id or "")
    assert run is not None
    assert run.result == "verified"
    assert runner.metrics.runs[("shop", "views.recompile", "verified")] == 1
    assert runner.metrics.store_failures["release"] + runner.metrics.store_failures["cooldown"] >= 1
    assert runner.metrics.store_pending_writes() > 0

    store.down = False
    await async_wait_for(lambda: _drained(runner.backlog), timeout=10, message="the backlog drained")
    views.stale = 3  # the condition is back
    later = await runner.accept_alert(Alert("firing", "Stale", "shop", "fp", "t1"), "am")

    await runner.wait_idle()

    # Not `locked`: the finished run's lock was released; and the step's cooldown landed too.
    assert later.decision == "started"
    again = runner.run(later.run_id or "")
    assert again is not None
    assert (again.records[0].action, again.records[0].result) == ("views.recompile", "cooldown")


async def _seen_pending(store: GatedConfirm, times: int) -> bool:
    return store.seen_pending >= times


async def _drained(backlog: StoreBacklog) -> bool:
    return len(backlog) == 0


async def test_a_finished_runs_lock_the_store_did_not_release_is_taken_over_by_the_next_run(
        tmp_path: Path) -> None:
    store = FlakyStore()
    runner, acts = runner_with(plan_config(tmp_path, cooldown=1), ScriptedViews(stale=3), store,
                               **{"views.recompile": None, "views.remove_orphans": None})
    gate = asyncio.Event()
    acts["views.recompile"].gate = gate
    await runner.accept_alert(firing(), "am")
    store.down = True
    gate.set()
    await runner.wait_idle()
    assert [k for k in store._keys if k.startswith("lock:")]  # still held: the release is queued
    store.down = False
    runner.backlog._task.cancel()  # type: ignore[union-attr]  # as if the retry had not come yet

    run = await runner.run_action("views.remove_orphans", "shop", False, "on-call")

    assert run.result == "unverified"  # it ran: the lock of the finished run did not stop it


async def test_a_manual_run_refused_while_the_store_is_down_claims_nothing(tmp_path: Path) -> None:
    store = FlakyStore()
    runner, _ = runner_with(plan_config(tmp_path), ScriptedViews(stale=3), store, **{"views.recompile": 0})
    store.down = store.lost_replies = True

    with pytest.raises(StoreUnavailable):
        await runner.run_action("views.recompile", "shop", False, "on-call")
    store.down = False

    run = await runner.run_action("views.recompile", "shop", False, "on-call")
    assert run.result == "verified"


async def test_a_manual_run_on_a_locked_target_is_not_run(tmp_path: Path) -> None:
    runner, acts = runner_with(plan_config(tmp_path), ScriptedViews(stale=3), **{"views.recompile": 0})
    gate = asyncio.Event()
    acts["views.recompile"].gate = gate
    await runner.accept_alert(firing(), "am")

    with pytest.raises(NotRun) as info:
        await runner.run_action("views.recompile", "shop", False, "on-call")
    gate.set()
    await runner.wait_idle()

    assert info.value.run.result == "locked"


# --- the backlog -----------------------------------------------------------------------------------


async def test_the_backlog_retries_until_the_store_answers_then_empties() -> None:
    store = FlakyStore()
    await store.claim("lock", "run", 20, stale_after=10)
    backlog = StoreBacklog(store)
    store.down = True

    async def release() -> None:
        await store.release("lock", "run")

    assert not await backlog.attempt("lock", "release", release, 60, "run")
    assert backlog.abandoned("lock") == ["run"]
    store.down = False
    await async_wait_for(lambda: _drained(backlog), timeout=10, message="the backlog drained")

    assert not await store.exists("lock")
    assert backlog.abandoned("lock") == []
    assert backlog.failures["release"] == 1


async def test_the_backlog_drops_a_write_once_it_no_longer_matters() -> None:
    now = [0.0]
    store = FlakyStore()
    backlog = StoreBacklog(store, monotonic=lambda: now[0])
    store.down = True
    backlog.release("lock", "run", within=30)
    now[0] += 31
    store.down = False
    store.calls.clear()

    assert await backlog.flush()
    assert store.calls == []  # expired: not even tried
    await backlog.close(drain=1)


async def test_a_write_made_while_others_wait_joins_the_queue_in_order() -> None:
    store = FlakyStore()
    backlog = StoreBacklog(store)
    order: list[str] = []

    def write(name: str) -> Write:
        async def w() -> None:
            await store.put(name, 60)
            order.append(name)
        return w

    store.down = True
    assert not await backlog.attempt("a", "account", write("a"), 60)
    store.down = False
    assert not await backlog.attempt("b", "account", write("b"), 60)
    assert store.calls == ["put"]  # "b" was queued behind "a", not tried alone

    await backlog.close(drain=5)
    assert order == ["a", "b"]


async def test_two_given_up_claims_on_one_key_are_both_released_and_both_taken_over() -> None:
    # Alertmanager retried while the store hung: two requests for one alert each gave up a claim,
    # and either may be the one the store holds when it resumes.
    store = FlakyStore()
    backlog = StoreBacklog(store)
    backlog.release("dedup", "first", within=60)
    backlog.release("dedup", "second", within=60)
    await MemoryStore.claim(store, "dedup", "first", 20, stale_after=10)

    assert backlog.abandoned("dedup") == ["first", "second"]
    assert await store.claim("dedup", "retry", 20, stale_after=10,
                             abandoned=backlog.abandoned("dedup")) == "claimed"
    await store.release("dedup", "retry")
    await MemoryStore.claim(store, "dedup", "second", 20, stale_after=10)
    await backlog.close(drain=5)

    assert len(backlog) == 0
    assert not await store.exists("dedup")  # the second release landed as well as the first
