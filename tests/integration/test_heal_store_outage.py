"""The heal while its store, a real redis-server, is frozen with SIGSTOP: the hard failure, where commands
are sent, no answer comes, and what was sent is applied when the server resumes.

- An alert answered 503 during the freeze is acted on, once, when Alertmanager redelivers it.
- A run during which the store freezes keeps its real result, and its lock is released (and its
  cooldown written) once the store answers again; the next alert is not turned away as `locked`.
- `cachewarden heal` writes the same audit stream as `serve`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.cli import main
from exporter.collectors.base import Observation
from exporter.config import Config, parse
from exporter.heal.actions.base import ActionOutcome
from exporter.heal.audit import STREAM
from exporter.heal.routes import HEAL_RUNNER
from exporter.heal.runner import HealRunner
from exporter.heal.runs import Run
from exporter.heal.store import KEY_PREFIX
from tests.support.healing import AUTH, alert, an_hour_ago, make_app_dir, payload, token_file, write_compiled
from tests.support.redis_server import PrivateRedis, private_redis
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
ORPHANED = "CachewardenViewsOrphaned"


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with private_redis(tmp_path) as server:
        yield server


def orphan(root: Path) -> Path:
    return write_compiled(root, str(root / "resources/views/gone.blade.php"), mtime=an_hour_ago())


def config_for(tmp_path: Path, server: PrivateRedis, *targets: str) -> Config:
    return parse({"laravel": [{"name": t, "root": str(tmp_path / t)} for t in targets],
                  "heal": {"token_file": str(token_file(tmp_path)), "redis_url": server.url}})


async def deliver(client: Client, body: dict[str, Any]) -> tuple[int, str | None]:
    resp = await client.post("/heal", data=json.dumps(body),
                             headers={"Content-Type": "application/json", **AUTH})
    answer = await resp.json()
    return resp.status, answer["decisions"][0]["decision"] if resp.status == 200 else None


def runner_of(client: Client) -> HealRunner:
    assert client.server.app is not None
    return client.server.app[HEAL_RUNNER]


async def test_an_alert_answered_503_while_redis_is_frozen_runs_once_when_redelivered(
        redis_server: PrivateRedis, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    make_app_dir(tmp_path / "warm")
    compiled = orphan(make_app_dir(tmp_path / "shop"))
    client = await aiohttp_client(create_app(config_for(tmp_path, redis_server, "shop", "warm"),
                                             run_collectors=False))
    runner = runner_of(client)
    # The store has served the heal before it hangs, as in production (its scripts are loaded).
    assert await deliver(client, payload(alert(ORPHANED, "warm", fingerprint="warm"))) == (200, "started")
    await runner.wait_idle()
    body = payload(alert(ORPHANED, "shop", fingerprint=uuid.uuid4().hex))

    with redis_server.frozen():
        during = await deliver(client, body)
    # What was sent to the frozen server is applied now; Alertmanager's retry must still act.
    retried = await deliver(client, body)
    await runner.wait_idle()
    third = await deliver(client, body)

    assert during == (503, None)
    assert retried == (200, "started")
    assert third == (200, "duplicate")
    shop_runs = [r.result for r in runner.recent_runs() if r.target == "shop"]
    assert shop_runs == ["verified"]
    assert not compiled.exists()


async def test_a_run_during_which_redis_freezes_keeps_its_result_and_frees_its_lock_when_it_returns(
        redis_server: PrivateRedis, tmp_path: Path, aiohttp_client: MakeClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    shop = make_app_dir(tmp_path / "shop")
    compiled = orphan(shop)
    config = config_for(tmp_path, redis_server, "shop")
    client = await aiohttp_client(create_app(config, run_collectors=False))
    runner = runner_of(client)
    action = runner.actions["views.remove_orphans"]
    remove_orphans = action.run

    async def freeze_then_run(target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        redis_server.freeze()  # the run is admitted and under way: everything it asks of the store hangs
        return await remove_orphans(target, observation, dry_run)

    monkeypatch.setattr(action, "run", freeze_then_run)
    try:
        assert (decided := await deliver(client, payload(alert(ORPHANED, "shop", fingerprint="a"))))[0] == 200
        run = next(r for r in runner.recent_runs())

        async def finished() -> Run | None:
            return run if run.state == "finished" else None

        await async_wait_for(finished, timeout=30, message="the run finished while Redis is frozen")
        assert decided == (200, "started")
        assert run.result == "verified"  # what the action did, not what the store could record
        assert not compiled.exists()
        assert sum(runner.metrics.store_failures.values()) >= 1
        assert runner.metrics.store_pending_writes() > 0
    finally:
        redis_server.thaw()
    monkeypatch.undo()

    async def locks_released() -> bool:
        with redis_server.client() as probe:
            return not probe.keys(f"{KEY_PREFIX}lock:*") and runner.metrics.store_pending_writes() == 0

    await async_wait_for(locks_released, timeout=20, message="the finished run's lock was released")
    orphan(shop)
    later = await deliver(client, payload(alert(ORPHANED, "shop", fingerprint="a",
                                                starts_at="2026-01-01T01:00:00Z")))

    # Not `locked`: the lock is gone; `cooldown`: the cooldown the frozen store missed was written.
    assert later == (200, "cooldown")
    assert runner.metrics.runs[("shop", "views.remove_orphans", "verified")] == 1
    assert runner.metrics.runs[("shop", "views.remove_orphans", "failed")] == 0


def test_the_heal_command_writes_the_redis_audit_stream_as_serve_does(
        redis_server: PrivateRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compiled = orphan(make_app_dir(tmp_path / "shop"))
    config = tmp_path / "cachewarden.yaml"
    config.write_text(yaml.safe_dump({"laravel": [{"name": "shop", "root": str(tmp_path / "shop")}],
                                      "heal": {"redis_url": redis_server.url}}))

    code = main(["heal", "views.remove_orphans", "--target", "shop", "--config.file", str(config)])

    assert code == 0
    assert not compiled.exists()
    with redis_server.client() as probe:
        events = [json.loads(fields[b"event"]) for _, fields in probe.xrange(STREAM)]
    assert [(e["event"], e["who"], e["target"], e["result"]) for e in events] == [
        ("heal_started", "cli", "shop", None), ("heal_finished", "cli", "shop", "verified")]
    # The same lines as on stderr, where the audit log goes as well.
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [e["run_id"] for e in logged] == [e["run_id"] for e in events]




async def test_redis_frozen_as_soon_as_a_run_starts_leaves_its_result_and_no_traceback(
        redis_server: PrivateRedis, tmp_path: Path, aiohttp_client: MakeClient,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    shop = make_app_dir(tmp_path / "shop")
    compiled = orphan(shop)
    client = await aiohttp_client(create_app(config_for(tmp_path, redis_server, "shop"),
                                             run_collectors=False))
    runner = runner_of(client)
    execute = runner._execute

    async def freeze_then_execute(run: Run) -> None:
        redis_server.freeze()  # admitted: the run's every word to the store, from its first, hangs
        await execute(run)

    monkeypatch.setattr(runner, "_execute", freeze_then_execute)
    body = payload(alert(ORPHANED, "shop", fingerprint="frozen-at-start"))
    try:
        assert await deliver(client, body) == (200, "started")
        [run] = runner.recent_runs()

        async def finished() -> Run | None:
            return run if run.state == "finished" else None

        await async_wait_for(finished, timeout=60, message="the run finished while Redis is frozen")
    finally:
        redis_server.thaw()
    monkeypatch.undo()
    await runner.wait_idle()

    assert (run.result, run.note) == ("verified", None)
    assert not compiled.exists()
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == []
    # The occurrence was acted on: its resend is a duplicate, and nothing is run again.
    assert await deliver(client, body) == (200, "duplicate")
