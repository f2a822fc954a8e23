"""MariaDB and MySQL: global status, InnoDB transactions and performance_schema statement digests.

Privileges: none beyond a login for connections, status and variables; PROCESS for the longest
transaction (information_schema.INNODB_TRX) and SELECT ON performance_schema.* for statement digests
(see docs/datastores.md). Each of those is an optional part (PARTS): one the server refuses is a NOTE
naming the grant and costs nothing else. Every statement carries the `cachewarden_probe` mark; the
digest hashes of the exporter's own statement shapes are learned from it once per server version and
left out of the digests reported.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.config import DatabaseTarget
from exporter.sql.stats import (
    PROBE_MARK,
    STATEMENT_DIGESTS,
    DbStats,
    Digest,
    KnownDigests,
    MissingColumnsError,
    StatementOptions,
    read_part,
)

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
_OWN_TEXT = (
    f"DIGEST_TEXT LIKE '%{PROBE_MARK}%' "
    "OR TRIM(DIGEST_TEXT) IN (" + ", ".join(f"'{d}'" for d in _OWN_UNMARKED) + ") "
    + " ".join(f"OR DIGEST_TEXT LIKE '{d}%'" for d in _OWN_SESSION_SETUP)
)
_DIGEST_TABLE = "performance_schema.events_statements_summary_by_digest"

# Reading the digest table costs the server more than every other query together, and what it costs
# is fixed by the engine: for every row it reads, performance_schema rebuilds the statement text from
# the stored tokens whatever the columns selected (PFS_digest_row::make_row), and the table has no
# index (MariaDB 10.11, MySQL 5.7), so any statement on it is one full pass. Window functions or a
# filter on the text on top of that pass cost more than the pass itself. So: one pass of bare numbers
# per reading, ranked here, and a lookup pass only for digests whose text has not been learned yet.
# Both statements are built from this module's constants only (hence the S608 waivers), the pass of
# numbers from the columns the server's table has.
#
# The columns a reading needs, and those it uses where the server has them; every MariaDB 10.x/11.x
# and MySQL 8.0/8.4 digest table has all of them (tests/data/sql holds their column lists), but a table
# that lacks an optional one costs only that number, and one that lacks a needed one only the digests.
_DIGEST_NEEDED = ("DIGEST", "SCHEMA_NAME", "DIGEST_TEXT", "COUNT_STAR", "SUM_TIMER_WAIT")
_NO_INDEX_COLUMNS = ("SUM_NO_INDEX_USED", "SUM_NO_GOOD_INDEX_USED")
_DIGEST_COLUMNS = text(
    f"SELECT UPPER(COLUMN_NAME) AS {PROBE_MARK} FROM information_schema.COLUMNS "  # noqa: S608
    "WHERE TABLE_SCHEMA = 'performance_schema' AND TABLE_NAME = 'events_statements_summary_by_digest'"
)


def digest_numbers_query(columns: frozenset[str]) -> TextClause:
    """The pass of numbers for a digest table with `columns` (upper case); raises MissingColumnsError
    when it lacks one the reading needs. An empty set (the account cannot see the table's columns) is
    taken as the full set, and the server's own refusal then names the grant."""
    have = columns or frozenset((*_DIGEST_NEEDED, "SUM_ROWS_EXAMINED", *_NO_INDEX_COLUMNS))
    if missing := [c for c in _DIGEST_NEEDED if c not in have]:
        raise MissingColumnsError(_DIGEST_TABLE, missing)
    rows = "SUM_ROWS_EXAMINED" if "SUM_ROWS_EXAMINED" in have else "NULL"
    no_index = " + ".join(c for c in _NO_INDEX_COLUMNS if c in have) or "NULL"
    return text(
        f"SELECT DIGEST AS {PROBE_MARK}, COALESCE(SCHEMA_NAME, ''), COUNT_STAR, SUM_TIMER_WAIT, "  # noqa: S608
        f"{rows}, {no_index} FROM {_DIGEST_TABLE} WHERE DIGEST IS NOT NULL"
    )


_DIGEST_NUMBERS = digest_numbers_query(frozenset())
# The texts of some digests, each flagged when it is one of the exporter's own shapes and when its whole
# text (not only the part reported) names a password; with :learn, also every own shape in the table,
# so that none is ever counted among the slow or unindexed ones.
_SENSITIVE_TEXT = "UPPER(DIGEST_TEXT) LIKE '%PASSWORD%' OR UPPER(DIGEST_TEXT) LIKE '%IDENTIFIED%'"
_DIGEST_TEXTS = text(
    f"SELECT DIGEST AS {PROBE_MARK}, LEFT(DIGEST_TEXT, :text_length), ({_OWN_TEXT}), "  # noqa: S608
    f"({_SENSITIVE_TEXT}) FROM {_DIGEST_TABLE} WHERE DIGEST IN :digests OR (:learn AND ({_OWN_TEXT}))"
).bindparams(bindparam("digests", expanding=True))
# The lookup's own shape can only be learned by a pass after the one that first ran it.
_LEARNING_PASSES = 2
# Own shapes not yet learned may rank among the candidates; looking up this many more per list means
# one lookup normally settles a reading (the exporter has fewer statement shapes than this).
_LOOKUP_MARGIN = 16
_LOOKUPS = 3  # per reading; candidates whose text is still unknown after that are left out
_VARIABLES = text(
    f"SELECT @@max_connections AS {PROBE_MARK}, @@performance_schema, VERSION(), @@long_query_time"
)
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


# The optional parts of a reading (the `part` label of cachewarden_db_part_up and _errors_total).
GLOBAL_STATUS, LONGEST_TRANSACTION = "global_status", "longest_transaction"
PARTS = (GLOBAL_STATUS, LONGEST_TRANSACTION, STATEMENT_DIGESTS)

# What each part needs beyond a login, named in the NOTE when the server refuses it.
_GRANTS = {
    GLOBAL_STATUS: "grant SELECT ON performance_schema.global_status (MySQL)",
    LONGEST_TRANSACTION: "grant PROCESS to measure it",
    STATEMENT_DIGESTS: "grant SELECT ON performance_schema.*",
}
# Server error numbers that mean "not allowed": table/column access denied, PROCESS or another
# global privilege missing, database access denied.
_DENIED = {1142, 1143, 1227, 1044}
# "No such table/column": a server version without it (or a table dropped by hand).
_MISSING = {1146, 1054}


async def read_stats(conn: AsyncConnection, opts: StatementOptions) -> DbStats:
    max_connections, performance_schema, version, long_query_time = (await conn.execute(_VARIABLES)).one()
    stats = DbStats(
        version=str(version), connections={}, max_connections=int(max_connections),
        long_query_time=float(long_query_time),
    )

    async def global_status() -> None:
        rows = (await conn.execute(_status_query(is_mariadb(version)))).all()
        _apply_status(stats, {name: int(float(value)) for name, value in rows})

    async def longest_transaction() -> None:
        stats.longest_transaction_seconds = float((await conn.execute(_LONGEST_TRX)).scalar_one())

    stats.longest_transaction_seconds = None  # unknown until read
    await read_part(stats, GLOBAL_STATUS, "server status", global_status, _explain(GLOBAL_STATUS,
                    "global status"))
    await read_part(stats, LONGEST_TRANSACTION, "longest transaction", longest_transaction,
                    _explain(LONGEST_TRANSACTION, "information_schema.INNODB_TRX"))
    if not opts.read_digests:
        stats.digests_fresh = False
        return stats
    if not int(performance_schema):
        stats.fail(STATEMENT_DIGESTS, "statement statistics", (
            "performance_schema is OFF, so statement digests are not measured "
            "(start the server with --performance-schema=ON); the slow query counter still is, "
            f"counting statements over long_query_time = {float(long_query_time):g} s"
        ), error=False)
        return stats
    async def digests() -> None:
        known = opts.known
        known.forget_if_not(stats.version)
        if known.columns is None:  # the table's shape is fixed by the server version
            known.columns = frozenset(r[0] for r in (await conn.execute(_DIGEST_COLUMNS)).all())
        await _read_digests(conn, opts, stats, digest_numbers_query(known.columns))
        if known.columns and not known.columns.intersection(_NO_INDEX_COLUMNS):
            stats.no_index, stats.no_index_total = [], None  # not measured, so not "every one used one"

    await read_part(stats, STATEMENT_DIGESTS, "statement statistics", digests,
                    _explain(STATEMENT_DIGESTS, "statement digests from performance_schema"))
    return stats


def _apply_status(stats: DbStats, status: dict[str, int]) -> None:
    """Global status values into `stats`: a name the server did not list stays unknown, never 0."""
    connected, running = status.get("THREADS_CONNECTED"), status.get("THREADS_RUNNING")
    if connected is not None and running is not None:
        stats.connections = {"active": running, "idle": max(0, connected - running)}
    stats.max_used_connections = status.get("MAX_USED_CONNECTIONS")
    stats.aborted = {kind: status[name] for kind, name in (("connect", "ABORTED_CONNECTS"),
                                                           ("client", "ABORTED_CLIENTS")) if name in status}
    stats.slow_queries = status.get("SLOW_QUERIES")
    stats.full_scans = status.get("SELECT_SCAN")


def _explain(part: str, what: str) -> Callable[[DBAPIError], str]:
    def explain(exc: DBAPIError) -> str:
        number = _number(exc)
        if number in _DENIED:
            fix = _GRANTS[part]
        elif number in _MISSING:
            fix = "this server version lacks a table or column cachewarden reads; the rest is measured"
        else:
            fix = "the rest of the reading is measured"
        return f"{what} cannot be read ({_code(exc)}); {fix}"

    return explain


def _number(exc: DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _code(exc: DBAPIError) -> str:
    """The server's error number and class (`1227 OperationalError`), never its text."""
    number = _number(exc)
    return f"{'' if number is None else f'{number} '}{type(exc.orig).__name__}"


async def _read_digests(
    conn: AsyncConnection, opts: StatementOptions, stats: DbStats, numbers: TextClause = _DIGEST_NUMBERS,
) -> None:
    known = opts.known
    known.forget_if_not(stats.version)
    digests = _merged((await conn.execute(numbers)).all(), known.own | known.withheld)
    for _ in range(_LOOKUPS):
        learn = known.learning_passes < _LEARNING_PASSES
        wanted = _untold(_Ranking(digests, opts, 0), known)
        if not wanted and not learn:
            break
        wanted |= _untold(_Ranking(digests, opts, _LOOKUP_MARGIN), known)
        # Two values at least: MariaDB files `IN (?)` and `IN (...)` under different digests.
        padded = sorted(wanted) + [""] * max(0, 2 - len(wanted))
        result = await conn.execute(
            _DIGEST_TEXTS, {"digests": padded, "text_length": opts.text_length, "learn": int(learn)}
        )
        seen: set[str] = set()
        for digest, digest_text, own, secret in result:
            seen.add(digest)
            if own or secret:
                (known.own if own else known.withheld).add(digest)
                digests.pop(digest, None)
            else:
                known.texts[digest] = " ".join(str(digest_text).split())
        for digest in wanted - seen:  # gone since the pass of numbers (table truncated or full)
            digests.pop(digest, None)
        known.learning_passes += learn
    ranking = _Ranking(digests, opts, 0)
    stats.top = _told(ranking.top, known)
    stats.slow, stats.slow_total = _told(ranking.slow, known), ranking.slow_total
    stats.no_index, stats.no_index_total = _told(ranking.no_index, known), ranking.no_index_total
    # Only the texts of digests reported stay remembered: the memory is bounded by top_n + 2 * listed.
    reported = {d.digest for d in (*stats.top, *stats.slow, *stats.no_index)}
    known.texts = {digest: text for digest, text in known.texts.items() if digest in reported}


# One digest's numbers as read: (digest, schema, calls, picoseconds, rows examined, no-index uses), the
# last two None where the table lacks their columns. Plain tuples: thousands are read and ranked per
# reading, and only the few reported become Digests.
_Numbers = tuple[str, str, int, int, int | None, int | None]
_TOTAL = operator.itemgetter(3)
# Statements run with these default schemas read server metadata, whose tables have no indexes to use:
# a tool browsing information_schema is not an application missing an index.
_SYSTEM_SCHEMAS = frozenset(("information_schema", "performance_schema", "mysql", "sys"))


def _mean(n: _Numbers) -> float:
    return n[3] / n[2] if n[2] else 0.0


class _Ranking:
    """The candidates of one reading, each list `margin` longer than reported."""

    def __init__(self, digests: dict[str, _Numbers], opts: StatementOptions, margin: int) -> None:
        slow_ps = opts.slow_threshold * 1e12
        everything = digests.values()
        slow = [n for n in everything if n[3] > slow_ps * n[2]]
        no_index = [n for n in everything if n[5] and n[1].lower() not in _SYSTEM_SCHEMAS]
        self.top = heapq.nlargest(opts.top_n + margin, everything, key=_TOTAL)
        self.slow = heapq.nlargest(opts.listed + margin, slow, key=_mean)
        self.no_index = heapq.nlargest(opts.listed + margin, no_index, key=_TOTAL)
        self.slow_total, self.no_index_total = len(slow), len(no_index)

    def digests(self) -> set[str]:
        return {n[0] for n in (*self.top, *self.slow, *self.no_index)}


def _untold(ranking: _Ranking, known: KnownDigests) -> set[str]:
    return {d for d in ranking.digests() if d not in known.texts}


def _told(ranked: list[_Numbers], known: KnownDigests) -> list[Digest]:
    return [
        Digest(digest, schema, text, float(calls), picoseconds / 1e12, _float(rows_examined),
               _float(no_index))
        for digest, schema, calls, picoseconds, rows_examined, no_index in ranked
        if (text := known.texts.get(digest)) is not None
    ]


def _float(n: int | None) -> float | None:
    return None if n is None else float(n)


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _merged(rows: Iterable[Any], own: set[str]) -> dict[str, _Numbers]:
    """Digests other than the exporter's own; one digest seen in several schemas is summed under the
    schema where it spent the most time, so the `digest` label stays unique."""
    out: dict[str, _Numbers] = {}
    for row in rows:
        digest = row[0]
        if digest in own:
            continue
        if (seen := out.get(digest)) is None:
            out[digest] = tuple(row)
            continue
        schema = row[1] if row[3] > seen[3] else seen[1]
        out[digest] = (digest, schema, seen[2] + row[2], seen[3] + row[3], _sum(seen[4], row[4]),
                       _sum(seen[5], row[5]))
    return out
