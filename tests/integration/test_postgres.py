"""The SQL collector against private PostgreSQL 15 clusters, with and without pg_stat_statements."""

from __future__ import annotations

import secrets

import pytest

from exporter.collectors.base import Verdict
from exporter.collectors.sql import (
    DB_CONNECTIONS,
    DB_MAX_CONNECTIONS,
    DB_STATEMENT_CALLS,
    DB_STATEMENT_INFO,
    DB_STATEMENT_STATS_AVAILABLE,
    DB_UP,
    SqlCollector,
)
from exporter.config import DatabaseTarget
from exporter.scheduler import Scheduler
from tests.support.postgres import PrivatePostgres, postgres_plain, postgres_with_statements
from tests.support.wait import async_wait_for

__all__ = ["postgres_plain", "postgres_with_statements"]  # fixtures, used by name

pytestmark = pytest.mark.integration


def collector_for(url: str, name: str = "pg") -> SqlCollector:
    return SqlCollector(DatabaseTarget(name=name, url=url), interval=10, timeout=5)


async def test_slow_statements_are_read_from_pg_stat_statements(
    postgres_with_statements: PrivatePostgres,
) -> None:
    server = postgres_with_statements
    marker = f"sleepy_{secrets.token_hex(3)}"
    for _ in range(2):
        server.sql(f"SELECT pg_sleep(0.2) AS {marker}")
    collector = collector_for(server.url())
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    assert obs.samples.value(DB_UP) == 1
    assert obs.samples.value(DB_STATEMENT_STATS_AVAILABLE) == 1
    texts = {lv[1]: lv[3] for spec, lv, _ in obs.samples.values if spec is DB_STATEMENT_INFO}
    [digest] = [d for d, t in texts.items() if marker in t]
    assert obs.samples.value(DB_STATEMENT_CALLS, digest=digest) == 2
    slow = next(c for c in obs.checks if c.name == "slow statements")
    assert slow.verdict is Verdict.PROBLEM
    assert any(marker in item for item in slow.items)
    assert not any("cachewarden_probe" in t or "current_schema" in t for t in texts.values())


async def test_without_pg_stat_statements_statement_stats_are_a_note_and_connections_still_count(
    postgres_plain: PrivatePostgres,
) -> None:
    collector = collector_for(postgres_plain.url())
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    assert obs.samples.value(DB_UP) == 1
    assert obs.samples.value(DB_MAX_CONNECTIONS) == 50
    assert obs.samples.value(DB_CONNECTIONS, state="active") == 1  # the collector's own query
    assert obs.samples.value(DB_CONNECTIONS, state="idle_in_transaction") == 0
    assert obs.samples.value(DB_STATEMENT_STATS_AVAILABLE) == 0
    note = next(c for c in obs.checks if c.name == "statement statistics")
    assert note.verdict is Verdict.NOTE
    assert "shared_preload_libraries" in note.summary


async def test_a_stopped_server_is_down_alone_and_reconnected_when_it_returns(
    postgres_plain: PrivatePostgres, postgres_with_statements: PrivatePostgres,
) -> None:
    scheduler = Scheduler([collector_for(postgres_plain.url(), "plain"),
                           collector_for(postgres_with_statements.url(), "other")])

    def up(target: str) -> float | None:
        obs = scheduler.status("sql", target).observation
        return obs.samples.value(DB_UP) if obs else None

    try:
        await scheduler.collect_all()
        assert (up("plain"), up("other")) == (1, 1)
        postgres_plain.stop()
        await scheduler.collect_all()
        assert (up("plain"), up("other")) == (0, 1)
        problem = scheduler.status("sql", "plain").checks[0]
        assert problem.verdict is Verdict.PROBLEM
        postgres_plain.start()

        async def back() -> bool:
            await scheduler.collect("sql", "plain")
            return up("plain") == 1

        await async_wait_for(back, timeout=20, message="sql collector reconnected")
    finally:
        await scheduler.close()
