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

# One pass over the digest table, which costs the server far more than every other query together
# (each row's text is rebuilt from its tokens): the top N by total time, the slowest by mean time and
# the heaviest unindexed ones, with both totals, ranked by window functions in a single scan.
_DIGESTS = text(f"""
    SELECT * FROM (
        SELECT DIGEST AS {PROBE_MARK}, COALESCE(SCHEMA_NAME, '') AS schema_name,
               LEFT(DIGEST_TEXT, :text_length) AS text, COUNT_STAR AS calls,
               SUM_TIMER_WAIT / 1e12 AS seconds, SUM_ROWS_EXAMINED AS rows_examined,
               SUM_NO_INDEX_USED + SUM_NO_GOOD_INDEX_USED AS no_index_used,
               AVG_TIMER_WAIT > :threshold_ps AS is_slow,
               SUM_NO_INDEX_USED + SUM_NO_GOOD_INDEX_USED > 0 AS is_unindexed,
               ROW_NUMBER() OVER (ORDER BY SUM_TIMER_WAIT DESC) AS by_total,
               ROW_NUMBER() OVER (ORDER BY AVG_TIMER_WAIT DESC) AS by_mean,
               ROW_NUMBER() OVER (ORDER BY SUM_NO_INDEX_USED + SUM_NO_GOOD_INDEX_USED > 0 DESC,
                                  SUM_TIMER_WAIT DESC) AS by_unindexed,
               SUM(AVG_TIMER_WAIT > :threshold_ps) OVER () AS slow_total,
               SUM(SUM_NO_INDEX_USED + SUM_NO_GOOD_INDEX_USED > 0) OVER () AS unindexed_total
        FROM performance_schema.events_statements_summary_by_digest
        WHERE DIGEST IS NOT NULL AND {_NOT_OWN}
    ) ranked
    WHERE by_total <= :top_n OR (is_slow AND by_mean <= :listed) OR (is_unindexed AND by_unindexed <= :listed)
""")  # noqa: S608 - built from this module's constants only
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
    rows = (await conn.execute(_DIGESTS, {
        "text_length": opts.text_length, "threshold_ps": opts.slow_threshold * 1e12,
        "top_n": opts.top_n, "listed": opts.listed,
    })).all()
    if not rows:
        return
    stats.top = _merged([r for r in sorted(rows, key=lambda r: r.by_total) if r.by_total <= opts.top_n])
    stats.slow = _merged([r for r in sorted(rows, key=lambda r: r.by_mean) if r.is_slow])
    stats.no_index = _merged([r for r in sorted(rows, key=lambda r: r.by_unindexed) if r.is_unindexed])
    stats.slow_total, stats.no_index_total = int(rows[0].slow_total), int(rows[0].unindexed_total)


def _merged(rows: Any) -> list[Digest]:
    """Digests in row order; one digest seen in several schemas is summed into its first row, so the
    `digest` label stays unique."""
    out: dict[str, Digest] = {}
    for r in rows:
        d = Digest(
            digest=str(r[0]), schema=r.schema_name, text=" ".join(str(r.text).split()), calls=float(r.calls),
            seconds=float(r.seconds), rows_examined=float(r.rows_examined),
            no_index_used=float(r.no_index_used),
        )
        if (seen := out.get(d.digest)) is None:
            out[d.digest] = d
        else:
            out[d.digest] = Digest(
                seen.digest, seen.schema, seen.text, seen.calls + d.calls, seen.seconds + d.seconds,
                (seen.rows_examined or 0) + (d.rows_examined or 0),
                (seen.no_index_used or 0) + (d.no_index_used or 0),
            )
    return list(out.values())
