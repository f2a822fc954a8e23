"""The heal's coordination through a real Redis: two sidecars (as apps in one process, and as two
processes) heal one alert exactly once; an alert refused while Redis is down is acted on when retried;
a crashed sidecar's lock expires, and its late release frees nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from exporter.app import create_app
from exporter.config import parse
from exporter.heal.audit import STREAM
from exporter.heal.backlog import StoreBacklog
from exporter.heal.claims import Claims
from exporter.heal.locks import ActionLocks
from exporter.heal.routes import HEAL_RUNNER
from exporter.heal.store import KEY_PREFIX, RedisStore
from tests.support.healing import AUTH, alert, an_hour_ago, make_app_dir, payload, token_file, write_compiled
from tests.support.prometheus import run_cachewarden
from tests.support.redis_server import SHARED_REDIS_URL
from tests.support.wait import async_wait_for, free_port

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]




async def test_two_sidecars_sharing_redis_heal_one_alert_once(
        redis: Redis, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    target = f"shop-{uuid.uuid4().hex[:8]}"  # unique, so concurrent test runs never share keys
    root = make_app_dir(tmp_path / "shop")
    compiled = write_compiled(root, str(root / "resources/views/gone.blade.php"), mtime=an_hour_ago())
    config = parse({"laravel": [{"name": target, "root": str(root)}],
                    "heal": {"token_file": str(token_file(tmp_path)), "redis_url": SHARED_REDIS_URL}})
    clients = [await aiohttp_client(create_app(config, run_collectors=False)) for _ in range(2)]
    body = json.dumps(payload(alert("CachewardenViewsOrphaned", target, fingerprint=uuid.uuid4().hex)))
    last_audit = (await redis.xrevrange(STREAM, count=1) or [(b"0-0", {})])[0][0]

    responses = await asyncio.gather(*(
        c.post("/heal", data=body, headers={"Content-Type": "application/json", **AUTH})
        for c in clients for _ in range(5)))

    decisions = [(await r.json())["decisions"][0]["decision"] for r in responses]
    assert all(r.status == 200 for r in responses)
    assert sorted(decisions) == ["duplicate"] * 9 + ["started"]
    runners = [c.server.app[HEAL_RUNNER] for c in clients]  # type: ignore[index]
    for runner in runners:
        await runner.wait_idle()
    runs = [run for runner in runners for run in runner.recent_runs()]
    assert len(runs) == 1
    assert runs[0].result == "verified"
    assert not compiled.exists()
    events = await redis.xrange(STREAM, min=f"({last_audit.decode()}", max="+")
    records = [json.loads(fields[b"event"]) for _, fields in events]
    finished = [e for e in records if e["event"] == "heal_finished" and e["target"] == target]
    assert [e["result"] for e in finished] == ["verified"]


async def test_two_sidecar_processes_sharing_redis_heal_one_alert_once(redis: Redis, tmp_path: Path) -> None:
    # The fleet case as deployed: two `cachewarden serve` processes, each with its own event loop and
    # memory, that only Redis connects.
    target = f"shop-{uuid.uuid4().hex[:8]}"
    root = make_app_dir(tmp_path / "shop")
    compiled = write_compiled(root, str(root / "resources/views/gone.blade.php"), mtime=an_hour_ago())
    config = {"laravel": [{"name": target, "root": str(root)}],
              "heal": {"token_file": str(token_file(tmp_path)), "redis_url": SHARED_REDIS_URL}}
    body = json.dumps(payload(alert("CachewardenViewsOrphaned", target, fingerprint=uuid.uuid4().hex)))
    headers = {"Content-Type": "application/json", **AUTH}

    with run_cachewarden(config, tmp_path / "a") as a, run_cachewarden(config, tmp_path / "b") as b:
        async with aiohttp.ClientSession() as session:

            async def post(url: str) -> str:
                async with session.post(f"{url}/heal", data=body, headers=headers) as resp:
                    assert resp.status == 200
                    return str((await resp.json())["decisions"][0]["decision"])

            decisions = await asyncio.gather(*(post(s.url) for s in (a, b) for _ in range(5)))

            async def finished_runs() -> list[dict[str, Any]] | None:
                runs = []
                for served in (a, b):
                    async with session.get(f"{served.url}/heal", headers=AUTH) as resp:
                        runs += (await resp.json())["runs"]
                return runs if runs and all(r["state"] == "finished" for r in runs) else None

            runs = await async_wait_for(finished_runs, timeout=30, message="the heal run finished")

    assert sorted(decisions) == ["duplicate"] * 9 + ["started"]
    assert [(r["target"], r["result"]) for r in runs] == [(target, "verified")]
    assert not compiled.exists()


@pytest.fixture
def redis_port() -> int:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    return free_port()


async def test_an_alert_that_arrives_while_redis_is_down_is_refused_then_acted_on_when_retried(
        redis_port: int, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    # Alertmanager retries a 5xx: the refusal must consume nothing, so that the retry heals.
    root = make_app_dir(tmp_path / "shop")
    compiled = write_compiled(root, str(root / "resources/views/gone.blade.php"), mtime=an_hour_ago())
    url = f"redis://127.0.0.1:{redis_port}/0"
    config = parse({"laravel": [{"name": "shop", "root": str(root)}],
                    "heal": {"token_file": str(token_file(tmp_path)), "redis_url": url}})
    client = await aiohttp_client(create_app(config, run_collectors=False))
    body = json.dumps(payload(alert("CachewardenViewsOrphaned", "shop", fingerprint=uuid.uuid4().hex)))
    headers = {"Content-Type": "application/json", **AUTH}

    refused = await client.post("/heal", data=body, headers=headers)
    manual = await client.post("/heal?action=views.remove_orphans&target=shop", headers=AUTH)

    assert refused.status == 503
    assert "coordination store is unavailable" in (await refused.json())["error"]
    assert manual.status == 503
    assert compiled.exists()

    server = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(tmp_path), stdout=asyncio.subprocess.DEVNULL)
    try:
        probe = Redis.from_url(url)
        await async_wait_for(lambda: _pings(probe), timeout=15, message="the test's redis-server answers")
        await probe.aclose()
        retried = await client.post("/heal", data=body, headers=headers)
        assert retried.status == 200
        assert (await retried.json())["decisions"][0]["decision"] == "started"
        await client.server.app[HEAL_RUNNER].wait_idle()  # type: ignore[index]
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), timeout=10)
    assert not compiled.exists()


async def _pings(client: Redis) -> bool:
    try:
        return bool(await client.ping())
    except RedisError:
        return False


async def test_a_crashed_sidecars_lock_expires_and_its_late_release_frees_nothing(redis: Redis) -> None:
    target = f"shop-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis)
    backlog = StoreBacklog(store)
    crashed, survivor = ActionLocks(store, backlog, 0.5, 60), ActionLocks(store, backlog, 60, 60)
    actions = ["views.recompile", "views.remove_orphans"]

    crashed_claims = Claims(store, backlog, "crashed-sidecar")
    assert await crashed.acquire(crashed_claims, actions, target)
    assert await crashed_claims.confirm()  # admitted: the lock now lasts lock_ttl (0.5 s here)
    refused = Claims(store, backlog, "survivor")
    assert not await survivor.acquire(refused, actions, target)
    await refused.release()
    # Taking every lock or none: the refused attempt holds no half of the set.
    assert await redis.get(f"{KEY_PREFIX}lock:views.recompile:{target}") == b"c:crashed-sidecar"
    assert await redis.exists(f"{KEY_PREFIX}lock:views.remove_orphans:{target}") == 1

    async def survivor_locks() -> bool:
        claims = Claims(store, backlog, "survivor")
        if await survivor.acquire(claims, actions, target):
            return await claims.confirm()
        await claims.release()
        return False

    await async_wait_for(survivor_locks, timeout=10, message="the crashed sidecar's lock expired")
    await crashed.release(actions, target, "crashed-sidecar")  # it comes back and cleans up, late

    assert not await crashed.acquire(Claims(store, backlog, "crashed-sidecar"), actions, target)
    await survivor.release(actions, target, "survivor")
    assert await redis.exists(*(f"{KEY_PREFIX}lock:{a}:{target}" for a in actions)) == 0


async def test_the_heal_store_connects_with_resp2_and_sets_no_client_name(redis: Redis) -> None:
    # Redis 5.0 has no HELLO and a least-privilege user may not run CLIENT SETNAME/SETINFO: the heal
    # store opens its connections the way the Redis collector does.
    store = RedisStore.from_url(SHARED_REDIS_URL)
    marker = f"resp-check-{uuid.uuid4().hex}"
    try:
        await store.claim(marker, uuid.uuid4().hex, 5.0, stale_after=1.0)
        clients = await redis.client_list()
        own_id = await store.client.client_id()
    finally:
        await store.close()
        await redis.delete(KEY_PREFIX + marker)
    mine = [c for c in clients if int(c["id"]) == own_id]
    assert mine, "the heal store's connection is not in CLIENT LIST"
    assert mine[0]["resp"] == "2"
    assert mine[0]["name"] == ""
    assert mine[0].get("lib-name", "") == ""
