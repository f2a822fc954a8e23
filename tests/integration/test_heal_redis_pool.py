"""The heal's Redis connections while the store is slow: one bounded pool, not a socket per request.

A private redis-server (the test pauses it, which must not stall other tests' Redis) holds every
command for a while with CLIENT PAUSE; a burst of /heal deliveries meanwhile must queue for the
pool's few connections and, once the store answers again, be decided as usual.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from exporter.app import create_app
from exporter.config import parse
from exporter.heal.routes import HEAL_RUNNER
from exporter.heal.store import POOL_SIZE
from tests.support.healing import AUTH, alert, make_app_dir, payload, token_file
from tests.support.wait import async_wait_for, free_port

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
DELIVERIES = 120


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        probe = Redis.from_url(url)

        async def pings() -> bool:
            try:
                return bool(await probe.ping())
            except RedisError:
                return False

        await async_wait_for(pings, timeout=15, message="the test's redis-server answers")
        await probe.aclose()
        yield url
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), timeout=10)


async def connected_clients(url: str) -> int:
    probe = Redis.from_url(url)
    try:
        return int((await probe.info("clients"))["connected_clients"]) - 1  # less the probe itself
    finally:
        await probe.aclose()


async def test_a_burst_of_deliveries_while_redis_is_slow_shares_one_bounded_pool(
        private_redis: str, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app_dir(tmp_path / "shop")
    config = parse({"laravel": [{"name": "shop", "root": str(root)}],
                    "heal": {"token_file": str(token_file(tmp_path)), "redis_url": private_redis,
                             "dry_run": True}})
    client = await aiohttp_client(create_app(config, run_collectors=False))
    headers = {"Content-Type": "application/json", **AUTH}
    pauser = Redis.from_url(private_redis)
    await pauser.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    try:
        answers = await asyncio.gather(*(
            client.post("/heal", headers=headers, data=json.dumps(payload(
                alert("CachewardenViewsOrphaned", "shop", fingerprint=uuid.uuid4().hex))))
            for _ in range(DELIVERIES)))
        statuses = sorted({a.status for a in answers})
        opened = await connected_clients(private_redis) - 1  # less the pauser
    finally:
        await pauser.aclose()
    await client.server.app[HEAL_RUNNER].wait_idle()  # type: ignore[index]
    assert 0 < opened <= POOL_SIZE, f"{opened} connections for {DELIVERIES} deliveries"
    # Each delivery was decided once the pause ended, or refused with 503 (retried by Alertmanager)
    # if it waited longer for a connection than the store's timeout: never a crash.
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
