"""The SQL collector against MariaDB: a private server with performance_schema ON, and the shared one."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from exporter.collectors.base import Verdict
from exporter.collectors.sql import (
    DB_CONNECTIONS,
    DB_LONG_QUERY_TIME,
    DB_LONGEST_TRANSACTION,
    DB_MAX_CONNECTIONS,
    DB_NO_INDEX_STATEMENTS,
    DB_PART_ERRORS,
    DB_PART_UP,
    DB_SLOW_QUERIES,
    DB_STATEMENT_CALLS,
    DB_STATEMENT_INFO,
    DB_STATEMENT_STATS_AVAILABLE,
    DB_UP,
    SqlCollector,
)
from exporter.config import DatabaseTarget
from exporter.metrics import Samples, SnapshotCollector
from exporter.scheduler import Scheduler
from tests.support.disclosure import assert_nowhere, shown_to_people
from tests.support.mariadb import PrivateMariaDB, mariadb_server, start_private_mariadb
from tests.support.wait import async_wait_for, free_port

__all__ = ["mariadb_server"]  # a fixture, used by name

pytestmark = pytest.mark.integration
READ_DIGESTS_EVERY_TIME = 1e-6  # seconds: due again by the next collection


@pytest.fixture
def schema(mariadb_server: PrivateMariaDB) -> str:
    """A database of its own per test, with an indexed and an unindexed column."""
    name = f"t_{secrets.token_hex(4)}"
    mariadb_server.sql(
        f"CREATE DATABASE {name}; CREATE TABLE {name}.orders (id INT PRIMARY KEY, customer INT, note TEXT,"
        " KEY by_customer (customer))"
    )
    mariadb_server.sql("INSERT INTO orders VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c')", name)
    return name


def shared_server_performance_schema() -> str | None:
    probe = subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", "-P3306", "-uroot", "-N", "-e",
                            "SELECT @@performance_schema"], capture_output=True, text=True, check=False)
    return probe.stdout.strip() if probe.returncode == 0 else None


@pytest.fixture
async def make_collector() -> AsyncIterator[Callable[..., SqlCollector]]:
    made: list[SqlCollector] = []

    def make(url: str, **kwargs: object) -> SqlCollector:
        # Digests are read on every collection unless a test is about their interval.
        kwargs.setdefault("digest_interval", READ_DIGESTS_EVERY_TIME)
        c = SqlCollector(DatabaseTarget(name="main", url=url, **kwargs), interval=10, timeout=5)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


def info_texts(samples: Samples) -> dict[str, str]:
    """digest -> text of every _info series."""
    return {lv[1]: lv[3] for spec, lv, _ in samples.values if spec is DB_STATEMENT_INFO}


async def run_as_app(server: PrivateMariaDB, database: str, *statements: str) -> None:
    """Statements from a separate client connection, as an application would send them."""
    engine = create_async_engine(server.url(database=database))
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def test_sleeping_statements_count_as_slow_and_lead_the_digests(
    mariadb_server: PrivateMariaDB, schema: str, make_collector: Callable[..., SqlCollector]
) -> None:
    mariadb_server.sql("SET GLOBAL long_query_time = 0.1")
    collector = make_collector(mariadb_server.url(database=schema))
    before = (await collector.collect()).samples
    marker = f"sleepy_{secrets.token_hex(3)}"  # a column alias: a statement shape no other test sends
    await run_as_app(mariadb_server, schema, *[f"SELECT SLEEP(0.2) AS {marker}"] * 3)
    obs = await collector.collect()

    assert obs.samples.value(DB_UP) == 1
    assert obs.samples.value(DB_SLOW_QUERIES) - before.value(DB_SLOW_QUERIES) == 3  # type: ignore[operator]
    texts = info_texts(obs.samples)
    [digest] = [d for d, t in texts.items() if marker in t]
    assert obs.samples.value(DB_STATEMENT_CALLS, digest=digest) == 3
    slow = next(c for c in obs.checks if c.name == "slow statements")
    assert slow.verdict is Verdict.PROBLEM
    assert any(marker in item and item.startswith("20") for item in slow.items)  # "200.x ms, 3 calls"


async def test_a_query_on_an_unindexed_column_is_listed_as_missing_an_index(
    mariadb_server: PrivateMariaDB, schema: str, make_collector: Callable[..., SqlCollector]
) -> None:
    await run_as_app(mariadb_server, schema, "SELECT id FROM orders WHERE note = 'b'",
                     "SELECT id FROM orders WHERE customer = 2")
    obs = await make_collector(mariadb_server.url(database=schema)).collect()
    missing = next(c for c in obs.checks if c.name == "missing indexes")
    assert missing.verdict is Verdict.PROBLEM
    assert any("`note` = ?" in item for item in missing.items)
    assert not any("`customer` = ?" in item for item in missing.items)


async def test_own_statements_stay_out_of_the_digests(
    mariadb_server: PrivateMariaDB, schema: str, make_collector: Callable[..., SqlCollector]
) -> None:
    mariadb_server.sql("TRUNCATE TABLE performance_schema.events_statements_summary_by_digest")
    collector = make_collector(mariadb_server.url(database=schema), top_n=500)
    for _ in range(3):
        obs = await collector.collect()
    by_schema = "SELECT DIGEST FROM performance_schema.events_statements_summary_by_digest WHERE SCHEMA_NAME="
    exporter_digests = {r[0] for r in mariadb_server.sql(f"{by_schema}'{schema}'")}
    assert exporter_digests, "the exporter's statements were not recorded at all"
    assert exporter_digests.isdisjoint(info_texts(obs.samples))


async def test_own_unindexed_statements_are_not_counted_among_those_missing_an_index(
    mariadb_server: PrivateMariaDB, schema: str, make_collector: Callable[..., SqlCollector]
) -> None:
    mariadb_server.sql("TRUNCATE TABLE performance_schema.events_statements_summary_by_digest")
    await run_as_app(mariadb_server, "", f"SELECT id FROM {schema}.orders WHERE note = 'a'")  # noqa: S608
    collector = make_collector(mariadb_server.url(database=schema))
    for _ in range(3):
        obs = await collector.collect()
    # One statement, so that nothing runs between it and the last reading: the exporter's statements
    # are those in its own schema, the application's ran with no default schema.
    unindexed = mariadb_server.sql(
        "SELECT DIGEST, COALESCE(SCHEMA_NAME, '') FROM performance_schema.events_statements_summary_by_digest"
        " WHERE SUM_NO_INDEX_USED + SUM_NO_GOOD_INDEX_USED > 0"
    )
    exporter_unindexed = {d for d, s in unindexed if s == schema}
    assert exporter_unindexed, "no statement of the exporter ran without an index: nothing to leave out"
    assert obs.samples.value(DB_NO_INDEX_STATEMENTS) == len({d for d, s in unindexed if s != schema})


async def test_between_digest_reads_the_last_digests_stand_in_and_the_digest_table_is_not_read(
    mariadb_server: PrivateMariaDB, schema: str, make_collector: Callable[..., SqlCollector]
) -> None:
    mariadb_server.sql("SET GLOBAL long_query_time = 0.1")
    collector = make_collector(mariadb_server.url(database=schema), digest_interval="1h")
    first = (await collector.collect()).samples
    marker = f"unseen_{secrets.token_hex(3)}"
    await run_as_app(mariadb_server, schema, f"SELECT SLEEP(0.2) AS {marker}")
    reads_of_the_digest_table = (
        "SELECT COALESCE(SUM(COUNT_STAR), 0) FROM performance_schema.events_statements_summary_by_digest"  # noqa: S608
        f" WHERE SCHEMA_NAME = '{schema}' AND DIGEST_TEXT LIKE '%events_statements_summary_by_digest%'"
    )
    [[reads_before]] = mariadb_server.sql(reads_of_the_digest_table)

    second = (await collector.collect()).samples

    [[reads_after]] = mariadb_server.sql(reads_of_the_digest_table)
    assert reads_after == reads_before
    assert second.value(DB_SLOW_QUERIES) - first.value(DB_SLOW_QUERIES) == 1  # type: ignore[operator]
    assert second.value(DB_STATEMENT_STATS_AVAILABLE) == 1
    assert info_texts(second) == info_texts(first)
    assert not any(marker in t for t in info_texts(second).values())


async def test_idle_connections_raise_the_connection_count_by_their_number(
    mariadb_server: PrivateMariaDB, schema: str, make_collector: Callable[..., SqlCollector]
) -> None:
    collector = make_collector(mariadb_server.url(database=schema))

    def total(s: Samples) -> float:
        return sum(s.value(DB_CONNECTIONS, state=st) or 0 for st in ("active", "idle"))

    before = total((await collector.collect()).samples)
    engine = create_async_engine(mariadb_server.url(database=schema), pool_size=5)
    held = []
    try:
        for _ in range(5):
            conn = await engine.connect()
            await conn.execute(text("SELECT 1"))
            held.append(conn)
        after = (await collector.collect()).samples
    finally:
        for conn in held:
            await conn.close()
        await engine.dispose()
    assert total(after) - before == 5
    assert after.value(DB_CONNECTIONS, state="idle") >= 5  # type: ignore[operator]


async def test_the_exporter_never_holds_more_than_two_connections(
    mariadb_server: PrivateMariaDB, schema: str, make_collector: Callable[..., SqlCollector]
) -> None:
    mariadb_server.sql("CREATE USER IF NOT EXISTS 'cw_pool'@'127.0.0.1'; "
                       "GRANT PROCESS ON *.* TO 'cw_pool'@'127.0.0.1'; "
                       "GRANT SELECT ON performance_schema.* TO 'cw_pool'@'127.0.0.1'")
    collector = make_collector(mariadb_server.url(user="cw_pool"))
    held: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        # Sampled while the collections run: what the pool holds at once, not what is left after.
        while not done.is_set():
            pool = collector._bounded.engine.sync_engine.pool
            held.append(pool.checkedout() + pool.checkedin())  # type: ignore[attr-defined]
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(*(collector.collect() for _ in range(8)))
    finally:
        done.set()
        await watcher
    assert all(r.samples.value(DB_UP) == 1 for r in results)
    assert max(held) == 2  # eight concurrent collections did need a second connection, and no third
    [[opened]] = mariadb_server.sql(
        "SELECT TOTAL_CONNECTIONS FROM performance_schema.users WHERE USER = 'cw_pool'")
    assert int(opened) <= 2


async def test_an_account_without_privileges_is_up_and_notes_what_to_grant(
    mariadb_server: PrivateMariaDB, schema: str, make_collector: Callable[..., SqlCollector]
) -> None:
    account = "'cw_bare'@'127.0.0.1'"
    mariadb_server.sql(f"DROP USER IF EXISTS {account}; CREATE USER {account}; "
                       f"GRANT SELECT ON {schema}.* TO {account}; SET GLOBAL long_query_time = 2.5")
    obs = await make_collector(mariadb_server.url(user="cw_bare", database=schema)).collect()

    assert obs.samples.value(DB_UP) == 1
    assert obs.samples.value(DB_MAX_CONNECTIONS) == 100
    assert obs.samples.value(DB_LONG_QUERY_TIME) == 2.5
    assert obs.samples.value(DB_LONGEST_TRANSACTION) is None  # unknown, not "no transaction"
    assert obs.samples.value(DB_STATEMENT_STATS_AVAILABLE) == 0
    notes = {c.name: c for c in obs.checks if c.verdict is Verdict.NOTE}
    assert "1227" in notes["longest transaction"].summary
    assert "grant PROCESS" in notes["longest transaction"].summary
    assert "grant SELECT ON performance_schema.*" in notes["statement statistics"].summary
    assert all(c.verdict is not Verdict.PROBLEM for c in obs.checks)
    # Each refused part is down and counted alone; global status, which any login reads, is up.
    parts = {lv[1]: v for spec, lv, v in obs.samples.values if spec is DB_PART_UP}
    assert parts == {"global_status": 1, "longest_transaction": 0, "statement_digests": 0}
    errors = {lv[1]: v for spec, lv, v in obs.samples.values if spec is DB_PART_ERRORS}
    assert errors == {"global_status": 0, "longest_transaction": 1, "statement_digests": 1}
    assert obs.samples.value(DB_CONNECTIONS, state="active") is not None


async def test_a_wrong_password_is_a_clear_problem_that_never_shows_the_password(
    mariadb_server: PrivateMariaDB, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    mariadb_server.sql("CREATE USER IF NOT EXISTS 'cw_locked'@'127.0.0.1' IDENTIFIED BY 'right-pw-1234'")
    wrong = "wrong-pw-9d1e77"
    (tmp_path / "pw").write_text(wrong + "\n")
    collector = SqlCollector(
        DatabaseTarget(name="main", url=mariadb_server.url(user="cw_locked"), password_file=tmp_path / "pw"),
        interval=10, timeout=5,
    )
    scheduler = Scheduler([collector])
    try:
        with caplog.at_level(logging.DEBUG):
            [status] = await scheduler.collect_all()
        obs = status.observation
        assert obs is not None
        assert obs.samples.value(DB_UP) == 0
        [check] = obs.checks
        assert check.verdict is Verdict.PROBLEM
        assert "Access denied for user 'cw_locked'" in check.summary
        shown = shown_to_people(scheduler, caplog.text, collector)
        assert "Access denied" in shown[0]
        assert_nowhere((wrong,), shown)
    finally:
        await scheduler.close()


async def test_an_unreachable_server_is_down_with_a_problem(
    make_collector: Callable[..., SqlCollector],
) -> None:
    obs = await make_collector(f"mysql+asyncmy://root@127.0.0.1:{free_port()}/x").collect()
    assert obs.samples.value(DB_UP) == 0
    assert obs.checks[0].verdict is Verdict.PROBLEM
    assert "2003" in obs.checks[0].summary  # asyncmy's "can't connect" code


async def test_without_performance_schema_statement_stats_are_a_note(
    make_collector: Callable[..., SqlCollector],
) -> None:
    # The shared server runs MariaDB's default: performance_schema OFF.
    if shared_server_performance_schema() != "0":
        pytest.skip("no MariaDB with performance_schema OFF on 127.0.0.1:3306")
    obs = await make_collector("mysql+asyncmy://root@127.0.0.1:3306/test").collect()
    assert obs.samples.value(DB_UP) == 1
    assert obs.samples.value(DB_STATEMENT_STATS_AVAILABLE) == 0
    assert obs.samples.value(DB_SLOW_QUERIES) is not None
    note = next(c for c in obs.checks if c.name == "statement statistics")
    assert note.verdict is Verdict.NOTE
    assert "performance_schema is OFF" in note.summary
    assert all(c.ok for c in obs.checks)


async def test_a_server_stopped_mid_run_is_down_and_reconnected_when_it_restarts(
    tmp_path: Path, make_collector: Callable[..., SqlCollector],
) -> None:
    server = start_private_mariadb(tmp_path)  # its own: stopping the shared one would upset other tests
    try:
        collector = make_collector(server.url())
        assert (await collector.collect()).samples.value(DB_UP) == 1  # the pool now holds a connection
        server.stop()
        down = await collector.collect()
        assert down.samples.value(DB_UP) == 0
        assert down.checks[0].verdict is Verdict.PROBLEM
        server.start()

        async def back() -> bool:
            return (await collector.collect()).samples.value(DB_UP) == 1

        await async_wait_for(back, timeout=30, message="sql collector reconnected after the restart")
    finally:
        server.stop()


def exposed_db_up(scheduler: Scheduler) -> float | None:
    """cachewarden_db_up of target main in the exposition /metrics serves now (None: no such series)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(scheduler))
    found = [float(line.rsplit(" ", 1)[1]) for line in generate_latest(registry).decode().splitlines()
             if line.startswith('cachewarden_db_up{target="main"}')]
    assert len(found) <= 1
    return found[0] if found else None


async def test_a_hung_server_reads_down_at_every_collection_and_up_once_it_answers(tmp_path: Path) -> None:
    # SIGSTOP: the kernel still accepts connections and the pooled one stays open, but nothing answers.
    server = start_private_mariadb(tmp_path)
    timeout = 2.0
    collector = SqlCollector(DatabaseTarget(name="main", url=server.url()), interval=timeout, timeout=timeout)
    scheduler = Scheduler([collector])
    try:
        await scheduler.collect("sql", "main")
        assert exposed_db_up(scheduler) == 1

        server.pause()
        readings = []
        for _ in range(4):  # every collection while it hangs, so CachewardenDbDown (`== 0`, for:) fires
            status = await scheduler.collect("sql", "main")
            assert status.duration < timeout + 1.0, "a collection must end within its timeout"
            readings.append(exposed_db_up(scheduler))
        assert readings == [0, 0, 0, 0]
        # Measured, and found down: the collector itself did not fail (no CachewardenCollectorDown).
        assert status.up is True
        assert status.checks[0].verdict is Verdict.PROBLEM
        assert status.checks[0].summary == f"cannot query: no answer within {timeout * 0.75:g}s"

        server.resume()

        async def back() -> bool:
            await scheduler.collect("sql", "main")
            return exposed_db_up(scheduler) == 1

        await async_wait_for(back, timeout=30, message="db_up 1 once the server answers again")
    finally:
        await scheduler.close()
        server.stop()
