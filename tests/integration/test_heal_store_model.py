"""The Redis store's claim scripts against the in-memory store, which the unit tests use as the model:
the same generated sequences of claims, confirmations and releases give the same answers and leave
the same keys on both, and a pending claim on Redis goes stale and expires on Redis's own clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from exporter.heal.store import KEY_PREFIX, MemoryStore, RedisStore
from tests.support.redis_server import PrivateRedis, private_redis
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.integration

KEYS = ("dedup:a", "lock:x")  # few keys and tokens, so that sequences meet each other's claims
TOKENS = ("t1", "t2")
LONG = 600.0  # no claim expires or goes stale while one sequence runs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with private_redis(Path(tmp_path_factory.mktemp("redis"))) as s:
        yield s


claim = st.tuples(st.just("claim"), st.sampled_from(KEYS), st.sampled_from(TOKENS),
                  st.lists(st.sampled_from(TOKENS), max_size=1))
confirm = st.tuples(st.just("confirm"), st.sampled_from(TOKENS),
                    st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True))
release = st.tuples(st.just("release"), st.sampled_from(KEYS), st.sampled_from(TOKENS))


async def _replay(url: str, ops: list[tuple[Any, ...]]) -> None:
    client = Redis.from_url(url)
    try:
        await client.flushdb()
        redis, memory = RedisStore(client), MemoryStore()
        for op in ops:
            if op[0] == "claim":
                _, key, token, abandoned = op
                got = [await s.claim(key, token, LONG, stale_after=LONG, abandoned=abandoned)
                       for s in (redis, memory)]
            elif op[0] == "confirm":
                _, token, keys = op
                got = [await s.confirm(token, dict.fromkeys(keys, LONG)) for s in (redis, memory)]
            else:
                _, key, token = op
                got = [await s.release(key, token) for s in (redis, memory)]
            assert got[0] == got[1], f"{op}: redis {got[0]!r}, memory {got[1]!r}"
            on_redis = {k: v.decode() for k in KEYS if (v := await client.get(KEY_PREFIX + k)) is not None}
            in_memory = {k: entry[0] for k in KEYS if (entry := memory._live(k)) is not None}
            assert on_redis == in_memory, f"after {op}"
    finally:
        await client.aclose()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(claim, confirm, release), min_size=2, max_size=16))
# The transitions the heal relies on, always tried besides the generated ones.
@example(ops=[("claim", "lock:x", "t1", []), ("confirm", "t1", ["lock:x"]), ("release", "lock:x", "t1")])
@example(ops=[("claim", "lock:x", "t1", []), ("confirm", "t1", ["lock:x"]),
              ("claim", "lock:x", "t2", ["t1"])])
@example(ops=[("claim", "dedup:a", "t1", []), ("claim", "dedup:a", "t2", []), ("release", "dedup:a", "t2"),
              ("confirm", "t2", ["dedup:a"]), ("claim", "dedup:a", "t2", ["t1"]),
              ("confirm", "t1", ["dedup:a"])])
@example(ops=[("claim", "dedup:a", "t1", []), ("claim", "lock:x", "t1", []), ("release", "lock:x", "t1"),
              ("confirm", "t1", ["dedup:a", "lock:x"])])
def test_redis_claims_answer_as_the_memory_model_does(
        server: PrivateRedis, ops: list[tuple[Any, ...]]) -> None:
    asyncio.run(_replay(server.url, ops))


async def test_a_pending_claim_on_redis_goes_stale_then_expires_on_its_own(server: PrivateRedis) -> None:
    client = Redis.from_url(server.url)
    store = RedisStore(client)
    try:
        assert await store.claim("dedup:b", "gave-up", 2.0, stale_after=0.3) == "claimed"
        assert await store.claim("dedup:b", "other", 2.0, stale_after=0.3) == "pending"
        started = time.monotonic()

        async def taken_over() -> bool:
            return await store.claim("dedup:b", "other", 2.0, stale_after=0.3) == "claimed"

        await async_wait_for(taken_over, timeout=5, message="the stale claim was taken over")
        assert time.monotonic() - started >= 0.2  # not before it was stale (Redis's clock, ms)
        assert not await store.confirm("gave-up", {"dedup:b": LONG})

        async def expired() -> bool:
            return not await store.exists("dedup:b")

        await async_wait_for(expired, timeout=5, message="the unconfirmed claim expired")
    finally:
        await client.aclose()
