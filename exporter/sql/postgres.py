"""PostgreSQL (13+): pg_stat_activity, pg_stat_database and, when preloaded, pg_stat_statements.

Privileges: a login reads every number; membership of pg_monitor (see docs/datastores.md) lets the
states and transaction ages of other roles' sessions be seen, which a NOTE asks for when missing.
Every statement carries the `cachewarden_probe` mark so that it can be left out of the statements
reported; statements whose text names a password are never reported (pg_stat_statements keeps the
literals of utility statements such as ALTER ROLE … PASSWORD '…').
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.config import DatabaseTarget
from exporter.sql.stats import PROBE_MARK, DbStats, Digest, StatementOptions

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
_DIGEST_COLUMNS = f"""
    s.queryid::text AS {PROBE_MARK}, COALESCE(max(d.datname), '') AS schema_name,
    left(max(s.query), :text_length) AS text, sum(s.calls) AS calls,
    sum(s.total_exec_time) / 1000 AS seconds, count(*) OVER () AS matching
"""
_FROM = f"""
    FROM pg_stat_statements s LEFT JOIN pg_database d ON d.oid = s.dbid
    WHERE s.queryid IS NOT NULL AND {_NOT_OWN}
    GROUP BY s.queryid
"""
_TOP = text(f"SELECT {_DIGEST_COLUMNS} {_FROM} ORDER BY sum(s.total_exec_time) DESC LIMIT :n")
_SLOW = text(
    f"SELECT {_DIGEST_COLUMNS} {_FROM} "
    "HAVING sum(s.total_exec_time) / greatest(sum(s.calls), 1) > :threshold_ms "
    "ORDER BY sum(s.total_exec_time) / greatest(sum(s.calls), 1) DESC LIMIT :n"
)


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


async def read_stats(conn: AsyncConnection, opts: StatementOptions) -> DbStats:
    max_connections, version, version_num, sees_all = (await conn.execute(_SERVER)).one()
    connections = dict.fromkeys([*STATES.values(), "other"], 0)
    longest = 0.0
    for state, n, state_longest in (await conn.execute(_ACTIVITY)).all():
        label = STATES.get(state, "other")
        connections[label] += int(n)
        longest = max(longest, float(state_longest))
    stats = DbStats(
        version=str(version).split(" on ", 1)[0],
        connections=connections,
        max_connections=int(max_connections),
        longest_transaction_seconds=longest,
        full_scans=int((await conn.execute(_SEQ_SCANS)).scalar_one()),
    )
    if int(version_num) >= _SESSIONS_SINCE:
        abandoned, fatal, killed = (await conn.execute(_SESSIONS)).one()
        stats.aborted = {"abandoned": int(abandoned), "fatal": int(fatal), "killed": int(killed)}
    if not sees_all:
        stats.notes.append(("other sessions", (
            "other roles' sessions count as state 'other' and their transactions are not timed; "
            "GRANT pg_monitor to see them")))
    params = {"mark": f"%{PROBE_MARK}%", "text_length": opts.text_length}
    try:
        top = await conn.execute(_TOP, {**params, "n": opts.top_n})
    except DBAPIError as exc:
        if (why := _statements_unavailable(exc)) is None:
            raise
        stats.statements_unavailable = (
            f"pg_stat_statements is not available, so statement statistics are not measured ({why})"
        )
        return stats
    stats.top = _digests(top)
    slow = (await conn.execute(
        _SLOW, {**params, "n": opts.listed, "threshold_ms": opts.slow_threshold * 1000}
    )).all()
    stats.slow, stats.slow_total = _digests(slow), (int(slow[0].matching) if slow else 0)
    return stats


def _statements_unavailable(exc: DBAPIError) -> str | None:
    """What to do about a failed read of pg_stat_statements, or None for any other failure."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if sqlstate == "42P01":  # undefined_table: the extension is not created in this database
        return ("add pg_stat_statements to shared_preload_libraries if it is not there, then "
                "CREATE EXTENSION pg_stat_statements in this database")
    if sqlstate == "55000":  # "pg_stat_statements must be loaded via shared_preload_libraries"
        return "add pg_stat_statements to shared_preload_libraries and restart"
    if sqlstate == "42501":  # insufficient_privilege
        return "GRANT pg_monitor (or SELECT ON pg_stat_statements) to the exporter's role"
    return None


def _digests(rows: Any) -> list[Digest]:
    return [
        Digest(digest=str(r[0]), schema=r.schema_name, text=" ".join(str(r.text).split()),
               calls=float(r.calls), seconds=float(r.seconds))
        for r in rows
    ]
