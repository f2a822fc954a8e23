"""PostgreSQL (13+): pg_stat_activity, pg_stat_database and, when preloaded, pg_stat_statements.

Privileges: a login reads every number; membership of pg_monitor (see docs/datastores.md) lets the
states and transaction ages of other roles' sessions be seen, which a NOTE asks for when missing.
Every view read after the version and max_connections is an optional part (PARTS): one the server
refuses costs only itself. pg_stat_statements is read through the columns its view has at the
extension version created in the database (`total_exec_time` since 1.8, `total_time` before).
Every statement carries the `cachewarden_probe` mark so that it can be left out of the statements
reported; statements whose text names a password are never reported (pg_stat_statements keeps the
literals of utility statements such as ALTER ROLE … PASSWORD '…').
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.config import DatabaseTarget
from exporter.sql.stats import (
    PROBE_MARK,
    STATEMENT_DIGESTS,
    DbStats,
    Digest,
    MissingColumnsError,
    StatementOptions,
    read_part,
)

# pg_stat_activity.state values, as label values; client backends in any other state count as "other".
STATES = {
    "active": "active",
    "idle": "idle",
    "idle in transaction": "idle_in_transaction",
    "idle in transaction (aborted)": "idle_in_transaction_aborted",
}

_ACTIVITY = text("""
    SELECT COALESCE(state, 'other') AS cachewarden_probe, count(*) AS n,
           COALESCE(EXTRACT(EPOCH FROM max(now() - xact_start)
                    FILTER (WHERE pid <> pg_backend_pid())), 0) AS longest
    FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY state
""")
# Settings any role may read: shared_preload_libraries is not one (it needs pg_read_all_settings), so
# whether pg_stat_statements works is learned from reading it.
_SERVER = text("""
    SELECT current_setting('max_connections')::int AS cachewarden_probe, version(),
           current_setting('server_version_num')::int,
           pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
""")
_SEQ_SCANS = text("SELECT COALESCE(sum(seq_scan), 0) AS cachewarden_probe FROM pg_stat_user_tables")
_SESSIONS_SINCE = 140000  # pg_stat_database.sessions_abandoned/_fatal/_killed appeared in PostgreSQL 14
_SESSIONS = text("""
    SELECT COALESCE(sum(sessions_abandoned), 0) AS cachewarden_probe, COALESCE(sum(sessions_fatal), 0),
           COALESCE(sum(sessions_killed), 0)
    FROM pg_stat_database
""")
# What SQLAlchemy's dialect sends once per new connection, which cannot carry the mark: a few exact
# texts, SHOW commands and system-catalog reads (an application's own statements rarely are either).
_OWN_UNMARKED = ("select current_schema()", "SELECT $1")
_NOT_OWN = (
    "s.query NOT LIKE :mark AND s.query NOT ILIKE '%pg\\_catalog.%' AND s.query NOT ILIKE 'show %' "
    "AND s.query NOT IN (" + ", ".join(f"'{q}'" for q in _OWN_UNMARKED) + ") "
    "AND s.query !~* '(password|identified)'"
)
# pg_stat_statements' columns (its view is the extension's, at the version created or last updated in
# this database, not the server's: a cluster upgraded from 12 keeps `total_time` until ALTER EXTENSION
# … UPDATE) and the installed and available extension versions, read before each reading.
_STATEMENTS_CATALOG = text("""
    SELECT COALESCE(array_agg(a.attname::text), '{}') AS cachewarden_probe,
           (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'),
           (SELECT default_version FROM pg_available_extensions WHERE name = 'pg_stat_statements')
    FROM pg_attribute a
    WHERE a.attrelid = to_regclass('pg_stat_statements') AND a.attnum > 0 AND NOT a.attisdropped
""")
_STATEMENTS_NEEDED = ("queryid", "query", "calls", "dbid")
# Total execution time in milliseconds: `total_exec_time` since pg_stat_statements 1.8 (PostgreSQL 13),
# `total_time` before.
_TIME_COLUMNS = ("total_exec_time", "total_time")


@functools.lru_cache(maxsize=8)
def statement_queries(columns: frozenset[str]) -> tuple[TextClause, TextClause]:
    """The top and slow statement queries for a pg_stat_statements view with `columns`; raises
    MissingColumnsError when it lacks one they need."""
    time = next((c for c in _TIME_COLUMNS if c in columns), None)
    missing = [c for c in _STATEMENTS_NEEDED if c not in columns] + ([] if time else ["total_exec_time"])
    if missing or time is None:
        raise MissingColumnsError("pg_stat_statements", missing)
    select = f"""
        s.queryid::text AS {PROBE_MARK}, COALESCE(max(d.datname), '') AS schema_name,
        left(max(s.query), :text_length) AS text, sum(s.calls) AS calls,
        sum(s.{time}) / 1000 AS seconds, count(*) OVER () AS matching
    """
    source = f"""
        FROM pg_stat_statements s LEFT JOIN pg_database d ON d.oid = s.dbid
        WHERE s.queryid IS NOT NULL AND {_NOT_OWN}
        GROUP BY s.queryid
    """
    mean = f"sum(s.{time}) / greatest(sum(s.calls), 1)"
    # Built from this module's constants and a column name from _TIME_COLUMNS only.
    top = text(f"SELECT {select} {source} ORDER BY sum(s.{time}) DESC LIMIT :n")
    slow = text(f"SELECT {select} {source} HAVING {mean} > :threshold_ms ORDER BY {mean} DESC LIMIT :n")
    return top, slow


def connect_args(target: DatabaseTarget, connect_timeout: float) -> dict[str, Any]:
    # Set at connection start-up by asyncpg: bounded sessions without a single extra statement.
    return {
        "timeout": connect_timeout,
        "server_settings": {
            "application_name": "cachewarden",
            "statement_timeout": str(round(target.statement_timeout * 1000)),
            "lock_timeout": str(round(target.lock_timeout * 1000)),
        },
    }


# The optional parts of a reading (the `part` label of cachewarden_db_part_up and _errors_total).
ACTIVITY, SESSIONS, TABLE_SCANS = "activity", "sessions", "table_scans"
PARTS = (ACTIVITY, SESSIONS, TABLE_SCANS, STATEMENT_DIGESTS)

_NOT_PRELOADED = "add pg_stat_statements to shared_preload_libraries and restart"
_NOT_CREATED = ("add pg_stat_statements to shared_preload_libraries if it is not there, then "
                "CREATE EXTENSION pg_stat_statements in this database")


async def read_stats(conn: AsyncConnection, opts: StatementOptions) -> DbStats:
    max_connections, version, version_num, sees_all = (await conn.execute(_SERVER)).one()
    stats = DbStats(version=str(version).split(" on ", 1)[0], connections={},
                    max_connections=int(max_connections), longest_transaction_seconds=None)

    async def activity() -> None:
        connections = dict.fromkeys([*STATES.values(), "other"], 0)
        longest = 0.0
        for state, n, state_longest in (await conn.execute(_ACTIVITY)).all():
            connections[STATES.get(state, "other")] += int(n)
            longest = max(longest, float(state_longest))
        stats.connections, stats.longest_transaction_seconds = connections, longest

    async def table_scans() -> None:
        stats.full_scans = int((await conn.execute(_SEQ_SCANS)).scalar_one())

    async def sessions() -> None:
        abandoned, fatal, killed = (await conn.execute(_SESSIONS)).one()
        stats.aborted = {"abandoned": int(abandoned), "fatal": int(fatal), "killed": int(killed)}

    await read_part(stats, ACTIVITY, "sessions by state", activity, _explain("pg_stat_activity"))
    await read_part(stats, TABLE_SCANS, "table scans", table_scans, _explain("pg_stat_user_tables"))
    if int(version_num) >= _SESSIONS_SINCE:
        await read_part(stats, SESSIONS, "aborted sessions", sessions, _explain("pg_stat_database"))
    if not sees_all:
        stats.notes.append(("other sessions", (
            "other roles' sessions count as state 'other' and their transactions are not timed; "
            "GRANT pg_monitor to see them")))
    await _read_statements(conn, opts, stats)
    return stats


async def _read_statements(conn: AsyncConnection, opts: StatementOptions, stats: DbStats) -> None:
    columns: list[str] = []
    installed = available = None

    async def catalog() -> None:
        nonlocal columns, installed, available
        columns, installed, available = (await conn.execute(_STATEMENTS_CATALOG)).one()

    if not await read_part(stats, STATEMENT_DIGESTS, "statement statistics", catalog,
                           _explain("the pg_stat_statements catalog")):
        return
    if not columns:  # not created in this database (or outside the search_path)
        stats.fail(STATEMENT_DIGESTS, "statement statistics",
                   f"pg_stat_statements is not available, so statement statistics are not measured "
                   f"({_NOT_CREATED})", error=False)
        return
    update = f"ALTER EXTENSION pg_stat_statements UPDATE (it is at {installed}, the server ships {available})"
    outdated = installed is not None and available is not None and installed != available
    if outdated:
        stats.notes.append(("pg_stat_statements version", f"read as version {installed} is; {update}"))

    async def statements() -> None:
        top_query, slow_query = statement_queries(frozenset(columns))
        params = {"mark": f"%{PROBE_MARK}%", "text_length": opts.text_length}
        top = _digests(await conn.execute(top_query, {**params, "n": opts.top_n}))
        slow = (await conn.execute(
            slow_query, {**params, "n": opts.listed, "threshold_ms": opts.slow_threshold * 1000}
        )).all()
        stats.top, stats.slow, stats.slow_total = top, _digests(slow), (int(slow[0].matching) if slow else 0)

    def explain(exc: DBAPIError) -> str:
        fix = _statements_fix(exc) or (update if outdated else "the rest of the reading is measured")
        return f"pg_stat_statements cannot be read ({_sqlstate(exc)}); {fix}"

    await read_part(stats, STATEMENT_DIGESTS, "statement statistics", statements, explain)
    failure = stats.parts.get(STATEMENT_DIGESTS)
    if failure is not None and outdated and "ALTER EXTENSION" not in failure.summary:
        stats.fail(STATEMENT_DIGESTS, failure.check, f"{failure.summary}; {update}", error=failure.error)


def _sqlstate(exc: DBAPIError) -> str:
    """The SQLSTATE and class of a server error (`42501 InsufficientPrivilegeError`), never its text."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return f"{code + ' ' if code else ''}{type(exc.orig).__name__}"


def _explain(view: str) -> Callable[[DBAPIError], str]:
    def explain(exc: DBAPIError) -> str:
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        fix = ("GRANT pg_monitor to the exporter's role" if code == "42501"
               else "the rest of the reading is measured")
        return f"{view} cannot be read ({_sqlstate(exc)}); {fix}"

    return explain


def _statements_fix(exc: DBAPIError) -> str | None:
    """What to do about a failed read of pg_stat_statements, when the SQLSTATE says."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if sqlstate == "42P01":  # undefined_table: the extension is not created in this database
        return _NOT_CREATED
    if sqlstate == "55000":  # "pg_stat_statements must be loaded via shared_preload_libraries"
        return _NOT_PRELOADED
    if sqlstate == "42501":  # insufficient_privilege
        return "GRANT pg_monitor (or SELECT ON pg_stat_statements) to the exporter's role"
    return None


def _digests(rows: Any) -> list[Digest]:
    return [
        Digest(digest=str(r[0]), schema=r.schema_name, text=" ".join(str(r.text).split()),
               calls=float(r.calls), seconds=float(r.seconds))
        for r in rows
    ]
