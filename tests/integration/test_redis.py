"""The Redis collector against real redis-server processes: a private one per test for exact deltas."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from exporter.collectors.base import Verdict
from exporter.collectors.redis_server import (
    REDIS_CONNECTED_CLIENTS,
    REDIS_DB_KEYS,
    REDIS_KEYSPACE_HITS,
    REDIS_KEYSPACE_MISSES,
    REDIS_MAX_CLIENTS,
    REDIS_UP,
    RedisCollector,
)
from exporter.config import RedisTarget
from exporter.scheduler import Scheduler
from tests.support.disclosure import assert_nowhere, shown_to_people
from tests.support.wait import async_wait_for, free_port, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-redis-pw-7781"


class PrivateRedis:
    """`acl`: extra `--user` rules; then the default user is off and `admin` (password `password`) may
    do everything, as on a host that gives its monitoring a least-privilege user."""

    def __init__(self, base: Path, password: str | None = None, acl: tuple[list[str], ...] = ()) -> None:
        self.base, self.port, self.password, self.acl = base, free_port(), password, acl
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.base), "--maxclients", "64"]
        if self.password:
            argv += ["--requirepass", self.password]
        if self.acl:
            argv += ["--user", "default", "off", "--user", "admin", "on", f">{self.password}", "~*", "&*",
                     "+@all"]
            for rules in self.acl:
                argv += ["--user", *rules]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, timeout=20, message=f"redis-server on {self.port}")

    def _answers(self) -> bool:
        return self.cli("PING") == "PONG"

    def cli(self, *command: str) -> str:
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        if self.acl:
            auth = ["--user", "admin", *auth]
        out = subprocess.run(["redis-cli", "-p", str(self.port), *auth, *command], capture_output=True,
                             text=True, timeout=5, check=False)
        return out.stdout.strip()

    def signal(self, sig: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)  # a frozen server would not act on SIGTERM
            self._proc.terminate()
            self._proc.wait(timeout=20)
            self._proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/3"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def collector_for(url: str, **kwargs: str) -> RedisCollector:
    return RedisCollector(RedisTarget(name="cache", url=url, **kwargs), interval=5, timeout=2)


async def test_own_lookups_move_hits_and_misses_by_exactly_that_much(redis_server: PrivateRedis) -> None:
    collector = collector_for(redis_server.url)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.set("cw-test:present", "1")
        before = (await collector.collect()).samples
        for _ in range(3):
            assert await client.get("cw-test:present") == b"1"
        for i in range(5):
            assert await client.get(f"cw-test:absent:{i}") is None
        after = (await collector.collect()).samples
    finally:
        await client.aclose()
        await collector.close()
    assert after.value(REDIS_UP) == 1
    assert after.value(REDIS_KEYSPACE_HITS) - before.value(REDIS_KEYSPACE_HITS) == 3  # type: ignore[operator]
    assert after.value(REDIS_KEYSPACE_MISSES) - before.value(REDIS_KEYSPACE_MISSES) == 5  # type: ignore[operator]
    assert after.value(REDIS_DB_KEYS, db="3") == 1
    assert after.value(REDIS_MAX_CLIENTS) == 64


async def test_an_empty_configured_database_is_exported_at_zero(redis_server: PrivateRedis) -> None:
    collector = collector_for(redis_server.url)
    try:
        samples = (await collector.collect()).samples
    finally:
        await collector.close()
    assert samples.value(REDIS_DB_KEYS, db="3") == 0


async def test_idle_connections_raise_the_client_count_by_their_number(redis_server: PrivateRedis) -> None:
    collector = collector_for(redis_server.url)
    idle = [aioredis.Redis.from_url(redis_server.url, single_connection_client=True) for _ in range(4)]
    try:
        before = (await collector.collect()).samples.value(REDIS_CONNECTED_CLIENTS)
        for client in idle:
            await client.ping()  # opens the connection, which then stays idle
        after = (await collector.collect()).samples.value(REDIS_CONNECTED_CLIENTS)
    finally:
        for client in idle:
            await client.aclose()
        await collector.close()
    assert after - before == 4  # type: ignore[operator]


async def test_a_stopped_server_is_down_alone_and_reconnected_when_it_returns(
    redis_server: PrivateRedis,
) -> None:
    private = collector_for(redis_server.url)
    shared = RedisCollector(RedisTarget(name="shared"), interval=5, timeout=2)
    scheduler = Scheduler([private, shared])
    try:
        await scheduler.collect_all()
        assert scheduler.status("redis", "cache").observation.samples.value(REDIS_UP) == 1  # type: ignore[union-attr]

        redis_server.stop()
        statuses = {s.target: s for s in await scheduler.collect_all()}
        down = statuses["cache"].observation
        assert down is not None
        assert down.samples.value(REDIS_UP) == 0
        assert [c.verdict for c in down.checks] == [Verdict.PROBLEM]
        assert "Connection" in down.checks[0].summary
        if statuses["shared"].observation is not None:  # the shared server may be absent on a bare host
            assert statuses["shared"].observation.samples.value(REDIS_UP) == 1

        redis_server.start()

        async def back_up() -> bool:
            obs = (await scheduler.collect("redis", "cache")).observation
            return obs is not None and obs.samples.value(REDIS_UP) == 1

        await async_wait_for(back_up, timeout=20, message="redis collector reconnected")
    finally:
        await scheduler.close()


async def test_a_wrong_password_is_a_clear_problem_that_never_shows_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path, password="the-real-one-5521")
    server.start()
    monkeypatch.setenv("CW_TEST_REDIS_PW", PASSWORD)
    collector = collector_for(server.url, password_env="CW_TEST_REDIS_PW")
    scheduler = Scheduler([collector])
    try:
        with caplog.at_level(logging.DEBUG):
            [status] = await scheduler.collect_all()
        obs = status.observation
        assert obs is not None
        assert obs.samples.value(REDIS_UP) == 0
        assert obs.checks[0].verdict is Verdict.PROBLEM
        assert "password" in obs.checks[0].summary.lower() or "auth" in obs.checks[0].summary.lower()
        assert_nowhere((PASSWORD,), shown_to_people(scheduler, caplog.text, collector))
    finally:
        await scheduler.close()
        server.stop()


async def test_a_user_allowed_only_info_and_ping_is_measured_and_denied_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The least-privilege monitoring user of a Redis 6+ ACL: no CLIENT SETNAME, SETINFO, HELLO or SELECT.
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path, password="admin-pw-1187",
                          acl=(["monitor", "on", f">{PASSWORD}", "-@all", "+info", "+ping"],))
    server.start()
    monkeypatch.setenv("CW_TEST_REDIS_PW", PASSWORD)
    url = f"redis://monitor@127.0.0.1:{server.port}/3"
    collector = collector_for(url, password_env="CW_TEST_REDIS_PW")
    try:
        assert server.cli("SET", "cw-test:k", "v") == "OK"
        assert server.cli("--no-raw", "GET", "cw-test:k") == '"v"'
        obs = await collector.collect()
        again = await collector.collect()  # the same connection, reused
    finally:
        await collector.close()
        denied = server.cli("ACL", "LOG")
        server.stop()
    assert obs.samples.value(REDIS_UP) == 1, obs.checks
    assert again.samples.value(REDIS_UP) == 1
    assert obs.samples.value(REDIS_KEYSPACE_HITS) == 1
    assert obs.samples.value(REDIS_MAX_CLIENTS) == 64
    assert obs.samples.value(REDIS_DB_KEYS, db="0") == 1
    assert obs.checks[0].verdict is Verdict.OK
    assert denied == "", f"the server logged denied commands: {denied}"


async def test_a_frozen_server_reads_down_at_every_collection_and_up_once_it_answers(
    redis_server: PrivateRedis,
) -> None:
    timeout = 1.0
    target = RedisTarget(name="cache", url=redis_server.url)
    collector = RedisCollector(target, interval=timeout, timeout=timeout)
    scheduler = Scheduler([collector])

    def redis_up() -> float | None:
        found = [v for b in scheduler.snapshot() if b.target == "cache"
                 if (v := b.value(REDIS_UP)) is not None]
        return found[0] if found else None

    try:
        await scheduler.collect("redis", "cache")
        assert redis_up() == 1
        redis_server.signal(signal.SIGSTOP)
        readings = []
        for _ in range(3):
            status = await scheduler.collect("redis", "cache")
            assert status.duration < timeout
            readings.append(redis_up())
        assert readings == [0, 0, 0]
        assert status.up is True  # measured: the server is what is down
        assert "Timeout" in status.checks[0].summary
        redis_server.signal(signal.SIGCONT)

        async def back() -> bool:
            await scheduler.collect("redis", "cache")
            return redis_up() == 1

        await async_wait_for(back, timeout=20, message="redis_up 1 once the server answers again")
    finally:
        redis_server.signal(signal.SIGCONT)
        await scheduler.close()
