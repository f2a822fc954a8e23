"""The SQL collector against private PostgreSQL 15 clusters, with and without pg_stat_statements."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from exporter.collectors.base import Verdict
from exporter.collectors.sql import (
    DB_CONNECTIONS,
    DB_LONGEST_TRANSACTION,
    DB_MAX_CONNECTIONS,
    DB_PART_ERRORS,
    DB_PART_UP,
    DB_STATEMENT_CALLS,
    DB_STATEMENT_INFO,
    DB_STATEMENT_SECONDS,
    DB_STATEMENT_STATS_AVAILABLE,
    DB_UP,
    SqlCollector,
)
from exporter.config import DatabaseTarget
from exporter.metrics import MetricSpec, Samples
from exporter.scheduler import Scheduler
from tests.support.disclosure import assert_nowhere, shown_to_people
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


async def test_libpq_sslmode_in_the_url_reaches_asyncpg_as_its_ssl_mode(
        postgres_plain: PrivatePostgres) -> None:
    # `?sslmode=` used to load and then fail every collection with "connect() got an unexpected
    # keyword argument 'sslmode'". The private cluster has no TLS: prefer falls back, require fails.
    for mode, up in (("prefer", 1), ("disable", 1), ("require", 0)):
        url = postgres_plain.url() + ("&" if "?" in postgres_plain.url() else "?") + f"sslmode={mode}"
        collector = SqlCollector(DatabaseTarget.model_validate({"name": "pg", "url": url}), interval=10,
                                 timeout=5)
        try:
            obs = await collector.collect()
        finally:
            await collector.close()
        assert obs.samples.value(DB_UP) == up, (mode, [c.summary for c in obs.checks])
        assert "unexpected keyword" not in " ".join(c.summary for c in obs.checks)


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


def role(server: PrivatePostgres, name: str, *grants: str, password: str | None = None) -> str:
    """A fresh login role with only `grants`; returns its name."""
    server.sql(f"DROP ROLE IF EXISTS {name}")
    server.sql(f"CREATE ROLE {name} LOGIN" + (f" PASSWORD '{password}'" if password else ""))
    for grant in grants:
        server.sql(f"GRANT {grant} TO {name}")
    return name


async def test_a_role_without_monitoring_privileges_is_up_and_notes_what_to_grant(
    postgres_plain: PrivatePostgres,
) -> None:
    postgres_plain.sql("CREATE EXTENSION pg_stat_statements")  # created, but the library is not preloaded
    collector = collector_for(postgres_plain.url(user=role(postgres_plain, "cw_bare")))
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    assert obs.samples.value(DB_UP) == 1
    assert obs.samples.value(DB_STATEMENT_STATS_AVAILABLE) == 0
    notes = {c.name: c.summary for c in obs.checks if c.verdict is Verdict.NOTE}
    assert "shared_preload_libraries" in notes["statement statistics"]
    assert "GRANT pg_monitor" in notes["other sessions"]
    assert all(c.verdict is not Verdict.PROBLEM for c in obs.checks)


async def test_statements_that_set_a_password_never_reach_the_statement_texts(
    postgres_with_statements: PrivatePostgres,
) -> None:
    server = postgres_with_statements
    secret = f"pw-{secrets.token_hex(6)}"
    role(server, "cw_victim", password=secret)
    server.sql(f"ALTER ROLE cw_victim PASSWORD '{secret}'")
    server.sql(f"ALTER ROLE cw_victim WITH password '{secret}-2'")
    collector = SqlCollector(DatabaseTarget(name="pg", url=server.url(), top_n=500), interval=10, timeout=5)
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    [[recorded]] = server.sql(
        f"SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%{secret}%'")  # noqa: S608
    assert int(recorded) >= 1, "pg_stat_statements did not record the statements: nothing to leave out"
    texts = [lv[3] for spec, lv, _ in obs.samples.values if spec is DB_STATEMENT_INFO]
    assert texts, "no statement reported at all"
    assert not any(secret in t or "password" in t.lower() for t in texts)
    assert secret not in str(obs.details)


async def test_idle_connections_and_an_open_transaction_are_counted_and_timed(
    postgres_with_statements: PrivatePostgres,
) -> None:
    server = postgres_with_statements
    collector = collector_for(server.url())
    engine = create_async_engine(server.url(), pool_size=4)
    held = []
    try:
        before = (await collector.collect()).samples
        for _ in range(3):
            conn = await engine.connect()
            await conn.execute(text("SELECT 1"))
            await conn.commit()
            held.append(conn)
        in_transaction = await engine.connect()
        held.append(in_transaction)
        await in_transaction.execute(text("SELECT txid_current()"))  # opens a transaction, left open

        async def transaction_aged() -> Samples | None:
            s = (await collector.collect()).samples
            return s if (s.value(DB_LONGEST_TRANSACTION) or 0) > 0.2 else None

        after = await async_wait_for(transaction_aged, timeout=10, message="the open transaction aged")
    finally:
        for conn in held:
            await conn.close()
        await engine.dispose()
        await collector.close()
    idle = after.value(DB_CONNECTIONS, state="idle") - (before.value(DB_CONNECTIONS, state="idle") or 0)  # type: ignore[operator]
    assert idle == 3
    assert after.value(DB_CONNECTIONS, state="idle_in_transaction") == 1
    assert after.value(DB_LONGEST_TRANSACTION) < 10  # type: ignore[operator]


async def test_a_wrong_password_is_down_and_the_password_shows_nowhere(
    postgres_with_statements: PrivatePostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    server = postgres_with_statements
    role(server, "cw_locked", password="right-pw-5521")
    hba = server.datadir / "pg_hba.conf"
    rule = "host all cw_locked 127.0.0.1/32 scram-sha-256\n"
    if rule not in hba.read_text():
        hba.write_text(rule + hba.read_text())  # first match wins: ahead of the cluster's trust lines
        server.sql("SELECT pg_reload_conf()")
    wrong = "wrong-pw-77e1c0"
    (tmp_path / "pw").write_text(wrong + "\n")
    scheduler = Scheduler([SqlCollector(
        DatabaseTarget(name="pg", url=server.url(user="cw_locked"), password_file=tmp_path / "pw"),
        interval=10, timeout=5)])
    try:
        with caplog.at_level(logging.DEBUG):
            [status] = await scheduler.collect_all()
        assert status.observation is not None
        assert status.observation.samples.value(DB_UP) == 0
        [check] = status.observation.checks
        assert check.verdict is Verdict.PROBLEM
        assert "password authentication failed" in check.summary
        assert_nowhere((wrong,), shown_to_people(scheduler, caplog.text, *scheduler.collectors))
    finally:
        await scheduler.close()


SHAPES = Path(__file__).resolve().parent.parent / "data" / "sql"


def create_database(server: PrivatePostgres, name: str) -> bool:
    """Create database `name` in the session's cluster unless an earlier test did; True if created."""
    if server.sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):  # noqa: S608 - test constant
        return False
    server.sql(f"CREATE DATABASE {name}")
    return True


def part_values(samples: Samples, spec: MetricSpec) -> dict[str, float]:
    return {lv[1]: v for s, lv, v in samples.values if s is spec}


@pytest.mark.parametrize("version", ["1.7", "1.8", "1.9", "1.10", "1.11"])
async def test_every_recorded_pg_stat_statements_shape_is_read_by_the_real_server(
    postgres_with_statements: PrivatePostgres, version: str,
) -> None:
    # A table with exactly the columns (and types) of that extension version stands in for the view,
    # found first on the reading role's search_path: the built queries run on the real server.
    server, tag = postgres_with_statements, version.replace(".", "_")
    schema, database = f"pgss_{tag}", "cw_shapes"
    create_database(server, database)
    recorded = (SHAPES / f"pg_stat_statements-{version}.txt").read_text().splitlines()
    columns = [line.split(" ", 1) for line in recorded]
    time_column = "total_time" if version == "1.7" else "total_exec_time"
    reader = role(server, f"cw_shape_{tag}")
    view = f"{schema}.pg_stat_statements"
    dbid = f"(SELECT oid FROM pg_database WHERE datname = '{database}')"  # noqa: S608 - test constants
    server.sql(  # every part a constant of this test
        f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; "  # noqa: S608
        f"CREATE TABLE {view} ({', '.join(f'{n} {t}' for n, t in columns)}); "
        f"INSERT INTO {view} (userid, dbid, queryid, query, calls, {time_column}, rows) VALUES "
        f"(10, {dbid}, 101, 'SELECT * FROM orders WHERE id = $1', 10, 50, 10), "
        f"(10, {dbid}, 202, 'SELECT pg_sleep($1)', 2, 1000, 2); "
        f"GRANT USAGE ON SCHEMA {schema} TO {reader}; GRANT SELECT ON {view} TO {reader}; "
        f"ALTER ROLE {reader} IN DATABASE {database} SET search_path = {schema}",
        database,
    )
    collector = collector_for(server.url(user=reader, database=database))
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    assert obs.samples.value(DB_UP) == 1
    assert part_values(obs.samples, DB_PART_UP)["statement_digests"] == 1
    assert obs.samples.value(DB_STATEMENT_CALLS, digest="202") == 2
    assert obs.samples.value(DB_STATEMENT_SECONDS, digest="202") == 1.0
    assert obs.samples.value(DB_STATEMENT_SECONDS, digest="101") == 0.05
    slow = next(c for c in obs.checks if c.name == "slow statements")
    assert slow.total_items == 1
    assert "pg_sleep" in slow.items[0]


async def test_an_extension_left_at_an_older_version_is_read_and_the_update_is_named(
    postgres_with_statements: PrivatePostgres,
) -> None:
    # As after pg_upgrade from PostgreSQL 12: the view still has total_time until ALTER EXTENSION … UPDATE.
    server, database = postgres_with_statements, "cw_pgss_old"
    if create_database(server, database):
        server.sql("CREATE EXTENSION pg_stat_statements VERSION '1.7'", database)
    # A shape of its own: aliases and constants do not make a statement distinct to pg_stat_statements.
    marker = "generate_series"
    server.sql("SELECT pg_sleep(0.15) FROM generate_series(1, 1)", database)
    collector = collector_for(server.url(database=database))
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    assert obs.samples.value(DB_UP) == 1
    assert part_values(obs.samples, DB_PART_UP)["statement_digests"] == 1
    # Read through the 1.7 view's total_time: the statement is among the slow ones (the top digests
    # are the cluster's heaviest, which other tests' statements may fill).
    slow = next(c for c in obs.checks if c.name == "slow statements")
    assert any(marker in item for item in slow.items)
    notes = {c.name: c.summary for c in obs.checks if c.verdict is Verdict.NOTE}
    assert "ALTER EXTENSION pg_stat_statements UPDATE (it is at 1.7, the server ships 1.10)" in (
        notes["pg_stat_statements version"])


async def test_a_refused_pg_stat_statements_costs_only_the_statements_and_is_counted(
    postgres_with_statements: PrivatePostgres,
) -> None:
    server, database = postgres_with_statements, "cw_pgss_revoked"
    if create_database(server, database):
        server.sql("CREATE EXTENSION pg_stat_statements; REVOKE SELECT ON pg_stat_statements FROM PUBLIC",
                   database)
    collector = collector_for(server.url(user=role(server, "cw_no_pgss"), database=database))
    try:
        first = await collector.collect()
        second = await collector.collect()
    finally:
        await collector.close()
    for obs in (first, second):
        assert obs.samples.value(DB_UP) == 1
        assert obs.samples.value(DB_CONNECTIONS, state="active") is not None
        assert obs.samples.value(DB_STATEMENT_STATS_AVAILABLE) == 0
        assert part_values(obs.samples, DB_PART_UP) == {
            "activity": 1, "table_scans": 1, "sessions": 1, "statement_digests": 0}
    assert part_values(first.samples, DB_PART_ERRORS) == {
        "activity": 0, "sessions": 0, "table_scans": 0, "statement_digests": 1}
    assert part_values(second.samples, DB_PART_ERRORS)["statement_digests"] == 2
    note = next(c for c in first.checks if c.name == "statement statistics")
    assert note.verdict is Verdict.NOTE
    assert note.summary.startswith("pg_stat_statements cannot be read (42501 ")
    assert "GRANT pg_monitor (or SELECT ON pg_stat_statements)" in note.summary
    assert all(c.verdict is not Verdict.PROBLEM for c in first.checks)


async def test_a_frozen_cluster_reads_down_at_every_collection_and_up_once_it_answers(
    postgres_plain: PrivatePostgres,
) -> None:
    timeout = 2.0
    collector = SqlCollector(DatabaseTarget(name="pg", url=postgres_plain.url()), interval=timeout,
                             timeout=timeout)
    scheduler = Scheduler([collector])

    def db_up() -> float | None:
        found = [v for b in scheduler.snapshot() if b.target == "pg" if (v := b.value(DB_UP)) is not None]
        return found[0] if found else None

    try:
        await scheduler.collect("sql", "pg")
        assert db_up() == 1
        postgres_plain.pause()
        readings = []
        for _ in range(3):
            status = await scheduler.collect("sql", "pg")
            assert status.duration < timeout + 1.0
            readings.append(db_up())
        assert readings == [0, 0, 0]
        assert status.up is True  # the collector measured; the server is what is down
        postgres_plain.resume()

        async def back() -> bool:
            await scheduler.collect("sql", "pg")
            return db_up() == 1

        await async_wait_for(back, timeout=30, message="db_up 1 once the cluster answers again")
    finally:
        postgres_plain.resume()
        await scheduler.close()
