"""MariaDB and MySQL: global status, InnoDB transactions and performance_schema statement digests.

Privileges needed: PROCESS (global status, information_schema.INNODB_TRX) and SELECT ON
performance_schema.* (see docs/datastores.md). Every statement carries the `cachewarden_probe` mark so
that it can be left out of the digests reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.config import DatabaseTarget
from exporter.sql.stats import PROBE_MARK, DbStats, Digest, StatementOptions

_STATUS_NAMES = (
    "THREADS_CONNECTED", "THREADS_RUNNING", "MAX_USED_CONNECTIONS", "ABORTED_CONNECTS", "ABORTED_CLIENTS",
    "SLOW_QUERIES", "SELECT_SCAN",
)
# Statement shapes SQLAlchemy's MySQL dialect and the session set-up send once per new connection;
# they cannot carry the mark. Digest texts, compared exactly (applications sending the same trivial
# statements lose nothing worth reporting).
_OWN_UNMARKED = (
    "SET `AUTOCOMMIT` = ?", "SET NAMES `utf8mb4`", "SELECT `VERSION` ( )", "SELECT SCHEMA ( )",
    "SELECT DATABASE ( )", "SELECT @@`tx_isolation`", "SELECT @@`transaction_isolation`",
    "SELECT @@`sql_mode`", "SELECT @@`lower_case_table_names`",
)
_OWN_SESSION_SETUP = ("SET SESSION MAX_STATEMENT_TIME = ? , SESSION `lock_wait_timeout` = ?",
                      "SET SESSION `max_execution_time` = ? , SESSION `lock_wait_timeout` = ?")
_NOT_OWN = (
    f"DIGEST_TEXT NOT LIKE '%{PROBE_MARK}%' "
    "AND TRIM(DIGEST_TEXT) NOT IN (" + ", ".join(f"'{d}'" for d in _OWN_UNMARKED) + ") "
    + " ".join(f"AND DIGEST_TEXT NOT LIKE '{d}%'" for d in _OWN_SESSION_SETUP)
)

_DIGEST_COLUMNS = f"""
    DIGEST AS {PROBE_MARK}, COALESCE(MAX(SCHEMA_NAME), '') AS schema_name,
    LEFT(MAX(DIGEST_TEXT), :text_length) AS text, SUM(COUNT_STAR) AS calls,
    SUM(SUM_TIMER_WAIT) / 1e12 AS seconds, SUM(SUM_ROWS_EXAMINED) AS rows_examined,
    SUM(SUM_NO_INDEX_USED) + SUM(SUM_NO_GOOD_INDEX_USED) AS no_index_used,
    COUNT(*) OVER () AS matching
"""
_FROM_DIGESTS = f"""
    FROM performance_schema.events_statements_summary_by_digest
    WHERE DIGEST IS NOT NULL AND {_NOT_OWN}
    GROUP BY DIGEST
"""
_TOP = text(f"SELECT {_DIGEST_COLUMNS} {_FROM_DIGESTS} ORDER BY SUM(SUM_TIMER_WAIT) DESC LIMIT :n")
_SLOW = text(
    f"SELECT {_DIGEST_COLUMNS} {_FROM_DIGESTS} "
    "HAVING SUM(SUM_TIMER_WAIT) / SUM(COUNT_STAR) > :threshold_ps "
    "ORDER BY SUM(SUM_TIMER_WAIT) / SUM(COUNT_STAR) DESC LIMIT :n"
)
_NO_INDEX = text(
    f"SELECT {_DIGEST_COLUMNS} {_FROM_DIGESTS} "
    "HAVING SUM(SUM_NO_INDEX_USED) + SUM(SUM_NO_GOOD_INDEX_USED) > 0 "
    "ORDER BY SUM(SUM_TIMER_WAIT) DESC LIMIT :n"
)
_VARIABLES = text(f"SELECT @@max_connections AS {PROBE_MARK}, @@performance_schema, VERSION()")
_LONGEST_TRX = text(
    "SELECT COALESCE(MAX(TIMESTAMPDIFF(MICROSECOND, trx_started, NOW(6))), 0) / 1e6 AS cachewarden_probe "
    "FROM information_schema.INNODB_TRX"
)


def connect_args(connect_timeout: float) -> dict[str, Any]:
    return {"connect_timeout": max(1, round(connect_timeout))}


def is_mariadb(version: str) -> bool:
    return "mariadb" in version.lower()


def session_setup(target: DatabaseTarget) -> Callable[[Any, Any], None]:
    """A pool `connect` hook bounding every session: statement time and lock waits."""
    lock_wait = max(1, round(target.lock_timeout))  # whole seconds, at least 1, in both servers

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        version = dbapi_connection.driver_connection.get_server_info()
        if is_mariadb(version):
            limit = f"SESSION max_statement_time = {target.statement_timeout:g}"
        else:  # MySQL 5.7.8+: milliseconds, SELECT only (the exporter only reads)
            limit = f"SESSION max_execution_time = {round(target.statement_timeout * 1000)}"
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(
                f"SET {limit}, SESSION lock_wait_timeout = {lock_wait}, "
                f"SESSION innodb_lock_wait_timeout = {lock_wait}"
            )
        finally:
            cursor.close()

    return on_connect


def _status_query(mariadb: bool) -> Any:
    # MySQL 5.7+ moved global status to performance_schema; MariaDB keeps it in information_schema.
    # Every part is a constant of this module, nothing comes from outside (hence the S608 waiver).
    table = "information_schema.GLOBAL_STATUS" if mariadb else "performance_schema.global_status"
    names = ", ".join(f"'{n}'" for n in _STATUS_NAMES)
    columns = f"UPPER(VARIABLE_NAME) AS {PROBE_MARK}, VARIABLE_VALUE"
    return text(f"SELECT {columns} FROM {table} WHERE UPPER(VARIABLE_NAME) IN ({names})")  # noqa: S608


async def read_stats(conn: AsyncConnection, opts: StatementOptions) -> DbStats:
    max_connections, performance_schema, version = (await conn.execute(_VARIABLES)).one()
    status = {
        name: int(float(value))
        for name, value in (await conn.execute(_status_query(is_mariadb(version)))).all()
    }
    running = status.get("THREADS_RUNNING", 0)
    stats = DbStats(
        version=str(version),
        connections={"active": running, "idle": max(0, status.get("THREADS_CONNECTED", 0) - running)},
        max_connections=int(max_connections),
        max_used_connections=status.get("MAX_USED_CONNECTIONS", 0),
        aborted={"connect": status.get("ABORTED_CONNECTS", 0), "client": status.get("ABORTED_CLIENTS", 0)},
        slow_queries=status.get("SLOW_QUERIES", 0),
        full_scans=status.get("SELECT_SCAN", 0),
        longest_transaction_seconds=float((await conn.execute(_LONGEST_TRX)).scalar_one()),
    )
    if not int(performance_schema):
        stats.statements_unavailable = (
            "performance_schema is OFF, so statement digests are not measured "
            "(start the server with --performance-schema=ON); the slow query counter still is"
        )
        return stats
    try:
        await _read_digests(conn, opts, stats)
    except DBAPIError as exc:
        # 1142: SELECT denied on performance_schema; the rest of the reading stays valid.
        stats.statements_unavailable = (
            "statement digests cannot be read from performance_schema "
            f"({type(exc.orig).__name__}); grant SELECT ON performance_schema.*"
        )
    return stats


async def _read_digests(conn: AsyncConnection, opts: StatementOptions, stats: DbStats) -> None:
    params = {"text_length": opts.text_length}
    stats.top = _digests(await conn.execute(_TOP, {**params, "n": opts.top_n}))
    threshold_ps = opts.slow_threshold * 1e12
    slow = (await conn.execute(_SLOW, {**params, "n": opts.listed, "threshold_ps": threshold_ps})).all()
    stats.slow, stats.slow_total = _digests(slow), (int(slow[0].matching) if slow else 0)
    no_index = (await conn.execute(_NO_INDEX, {**params, "n": opts.listed})).all()
    stats.no_index, stats.no_index_total = _digests(no_index), (int(no_index[0].matching) if no_index else 0)


def _digests(rows: Any) -> list[Digest]:
    return [
        Digest(
            digest=str(r[0]), schema=r.schema_name, text=" ".join(str(r.text).split()), calls=float(r.calls),
            seconds=float(r.seconds), rows_examined=float(r.rows_examined),
            no_index_used=float(r.no_index_used),
        )
        for r in rows
    ]
