"""The Redis collector against the releases a host may run, played back from their recorded INFO answers.

Each release is served by tests/support/fake_redis.py, which answers the commands that release did not
know with its own error (Redis 5.0 has no HELLO). The collector must send INFO and nothing else (AUTH
first when a password is set), and export exactly the fields that release reports.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from exporter.collectors.base import Verdict
from exporter.collectors.redis_server import (
    REDIS_BLOCKED_CLIENTS,
    REDIS_CONNECTED_CLIENTS,
    REDIS_DB_KEYS,
    REDIS_EVICTED_KEYS,
    REDIS_KEYSPACE_HITS,
    REDIS_KEYSPACE_MISSES,
    REDIS_MAX_CLIENTS,
    REDIS_MAX_MEMORY,
    REDIS_REJECTED_CONNECTIONS,
    REDIS_UP,
    REDIS_USED_MEMORY,
    RedisCollector,
)
from exporter.config import RedisTarget
from exporter.metrics import Samples
from tests.support.fake_redis import RELEASES, FakeRedis, recorded_info

PASSWORD = "fake-redis-pw-3391"


def recorded_fields(release: str) -> dict[str, str]:
    """`field: value` lines of a recording, read independently of redis-py's parser."""
    lines = recorded_info(release).split("\r\n")
    return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))


async def collect(server: FakeRedis, **target: str) -> tuple[Samples, list[tuple[str, Verdict, str]]]:
    collector = RedisCollector(RedisTarget(name="cache", url=server.url, **target), interval=5, timeout=2)
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    return obs.samples, [(c.name, c.verdict, c.summary) for c in obs.checks]


@pytest.mark.parametrize("release", RELEASES)
async def test_each_release_is_measured_with_one_info_and_nothing_else(release: str) -> None:
    async with FakeRedis(release) as server:
        samples, _ = await collect(server)
    assert server.commands == [["INFO"]]
    fields = recorded_fields(release)
    assert samples.value(REDIS_UP) == 1
    for field, spec in (
        ("keyspace_hits", REDIS_KEYSPACE_HITS), ("keyspace_misses", REDIS_KEYSPACE_MISSES),
        ("connected_clients", REDIS_CONNECTED_CLIENTS), ("blocked_clients", REDIS_BLOCKED_CLIENTS),
        ("rejected_connections", REDIS_REJECTED_CONNECTIONS), ("evicted_keys", REDIS_EVICTED_KEYS),
        ("used_memory", REDIS_USED_MEMORY),
    ):
        assert samples.value(spec) == float(fields[field]), field


@pytest.mark.parametrize(("release", "maxclients"), [
    ("redis-5.0", None), ("redis-6.0", None), ("redis-6.2", 100), ("redis-7.0", 10000), ("valkey-8.0", 10000),
])
async def test_maxclients_is_exported_only_by_releases_that_report_it(
    release: str, maxclients: int | None
) -> None:
    async with FakeRedis(release) as server:
        samples, checks = await collect(server)
    assert samples.value(REDIS_MAX_CLIENTS) == maxclients
    [(_, verdict, summary)] = [c for c in checks if c[0] == "clients"]
    if maxclients is None:
        assert verdict is Verdict.NOTE
        assert "does not report maxclients" in summary
    else:
        assert f"of {maxclients} clients" in summary


@pytest.mark.parametrize(("release", "maxmemory"), [
    ("redis-5.0", 268435456), ("redis-6.0", None), ("redis-6.2", 1073741824), ("redis-7.0", None),
    ("valkey-8.0", None),
])
async def test_maxmemory_0_means_no_limit_and_is_not_exported(release: str, maxmemory: int | None) -> None:
    async with FakeRedis(release) as server:
        samples, _ = await collect(server)
    assert samples.value(REDIS_MAX_MEMORY) == maxmemory


async def test_clients_near_maxclients_is_a_problem_on_6_2() -> None:
    async with FakeRedis("redis-6.2") as server:
        _, checks = await collect(server)
    assert ("clients", Verdict.PROBLEM, "87 of 100 clients (87%)") in checks


async def test_valkey_is_named_as_such_with_its_own_version() -> None:
    async with FakeRedis("valkey-8.0") as server:
        _, checks = await collect(server)
    assert checks[0] == ("server reachable", Verdict.OK, "Valkey 8.0.1 answers")


async def test_keys_per_database_come_from_the_keyspace_section() -> None:
    async with FakeRedis("redis-5.0") as server:
        samples, _ = await collect(server)
    assert samples.value(REDIS_DB_KEYS, db="0") == 31201
    assert samples.value(REDIS_DB_KEYS, db="1") == 412
    assert samples.value(REDIS_DB_KEYS, db="3") == 0  # the URL's database, empty, and never SELECTed


@pytest.mark.parametrize("release", RELEASES)
async def test_a_password_is_sent_with_auth_and_then_only_info(
    release: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CW_FAKE_REDIS_PW", PASSWORD)
    async with FakeRedis(release, password=PASSWORD) as server:
        samples, _ = await collect(server, password_env="CW_FAKE_REDIS_PW")
    assert samples.value(REDIS_UP) == 1
    assert server.commands == [["AUTH", PASSWORD], ["INFO"]]


async def test_the_played_back_5_0_refuses_hello_as_redis_5_0_does() -> None:
    # What the collector avoids: a client opening with RESP3 (redis-py 8's default) cannot talk to 5.0.
    async with FakeRedis("redis-5.0") as server:
        client = aioredis.Redis(host="127.0.0.1", port=server.port, protocol=3)
        try:
            with pytest.raises(ResponseError, match="unknown command 'HELLO'"):
                await client.info()
        finally:
            await client.aclose()
    assert server.commands[0][0] == "HELLO"
