"""What a MariaDB/MySQL server does not report stays absent: a global status name it does not list, the
no-index counts of a digest table without those columns. A fake connection answers the reader's
statements by their text, as a server of that shape would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.collectors.sql import (
    DB_CONNECTIONS,
    DB_MAX_USED_CONNECTIONS,
    DB_NO_INDEX_STATEMENTS,
    DB_SLOW_QUERIES,
    DB_STATEMENT_CALLS,
    DB_STATEMENT_ROWS_EXAMINED,
    SqlCollector,
)
from exporter.config import DatabaseTarget
from exporter.sql import mysql
from exporter.sql.stats import DbStats, KnownDigests, StatementOptions

DATA = Path(__file__).resolve().parent.parent / "data" / "sql"
PS = 10**12


class _Result(list[tuple[Any, ...]]):
    def all(self) -> list[tuple[Any, ...]]:
        return list(self)

    def one(self) -> tuple[Any, ...]:
        [row] = self
        return row

    def scalar_one(self) -> Any:
        return self.one()[0]


class FakeServer:
    """Answers the MariaDB reader's statements with `status` and a digest table of `columns`."""

    def __init__(self, status: dict[str, int], columns: frozenset[str]) -> None:
        self.status, self.columns = status, columns
        self.digest_sql: list[str] = []

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> _Result:
        sql = str(statement)
        if "@@max_connections" in sql:
            return _Result([(151, 1, "10.11.6-MariaDB", 10.0)])
        if "GLOBAL_STATUS" in sql:
            return _Result(list(self.status.items()))
        if "INNODB_TRX" in sql:
            return _Result([(0.0,)])
        if "information_schema.COLUMNS" in sql:
            return _Result([(c,) for c in sorted(self.columns)])
        if "COUNT_STAR" in sql:  # the pass of numbers, shaped by the columns the table has
            self.digest_sql.append(sql)
            rows = "SUM_ROWS_EXAMINED" in sql
            no_index = "SUM_NO_INDEX_USED" in sql
            return _Result([("d1", "shop", 4, 2 * PS, 40 if rows else None, 4 if no_index else None)])
        assert params is not None  # the lookup of texts
        return _Result([("d1", "SELECT `x` FROM `t`", 0, 0)] if "d1" in params["digests"] else [])


def shape(name: str) -> frozenset[str]:
    return frozenset(line.split(" ", 1)[0] for line in (DATA / f"{name}.txt").read_text().splitlines())


async def read(server: FakeServer) -> tuple[DbStats, Any]:
    opts = StatementOptions(top_n=5, slow_threshold=0.1, text_length=60, listed=5, known=KnownDigests())
    stats = await mysql.read_stats(server, opts)  # type: ignore[arg-type]
    collector = SqlCollector(DatabaseTarget(name="main", url="mysql://cw@127.0.0.1/shop"), interval=10,
                             timeout=5)
    return stats, (collector._samples(stats), collector._checks(stats))


FULL_STATUS = {"THREADS_CONNECTED": 12, "THREADS_RUNNING": 2, "MAX_USED_CONNECTIONS": 30,
               "ABORTED_CONNECTS": 1, "ABORTED_CLIENTS": 2, "SLOW_QUERIES": 3, "SELECT_SCAN": 9}


async def test_a_full_status_and_digest_table_export_every_value() -> None:
    _, (samples, checks) = await read(FakeServer(FULL_STATUS, shape("digest-mariadb-10.11")))
    assert samples.value(DB_CONNECTIONS, state="idle") == 10
    assert samples.value(DB_SLOW_QUERIES) == 3
    assert samples.value(DB_NO_INDEX_STATEMENTS) == 1
    assert samples.value(DB_STATEMENT_ROWS_EXAMINED, digest="d1") == 40
    assert "missing indexes" in {c.name for c in checks}


async def test_status_names_the_server_does_not_list_are_absent_not_zero() -> None:
    status = {k: v for k, v in FULL_STATUS.items() if k not in ("THREADS_RUNNING", "SLOW_QUERIES",
                                                                  "MAX_USED_CONNECTIONS")}
    stats, (samples, checks) = await read(FakeServer(status, shape("digest-mariadb-10.11")))
    assert samples.value(DB_CONNECTIONS, state="idle") is None  # idle needs running too
    assert samples.value(DB_SLOW_QUERIES) is None
    assert samples.value(DB_MAX_USED_CONNECTIONS) is None
    assert stats.aborted == {"connect": 1, "client": 2}
    connections = next(c for c in checks if c.name == "connections")
    assert connections.summary == "connections in use not measured; max_connections = 151"


async def test_a_digest_table_without_no_index_columns_claims_nothing_about_indexes() -> None:
    columns = shape("digest-mysql-8.4") - {"SUM_NO_INDEX_USED", "SUM_NO_GOOD_INDEX_USED", "SUM_ROWS_EXAMINED"}
    server = FakeServer(FULL_STATUS, columns)
    stats, (samples, checks) = await read(server)
    assert "SUM_NO_INDEX_USED" not in server.digest_sql[0]
    assert samples.value(DB_STATEMENT_CALLS, digest="d1") == 4
    assert samples.value(DB_STATEMENT_ROWS_EXAMINED, digest="d1") is None
    assert samples.value(DB_NO_INDEX_STATEMENTS) is None
    assert "missing indexes" not in {c.name for c in checks}  # not "every statement used an index"
    assert stats.parts == {"global_status": None, "longest_transaction": None, "statement_digests": None}
