"""PostgreSQL (13+): pg_stat_activity, pg_stat_database and, when preloaded, pg_stat_statements.

Privilege needed: membership of pg_monitor (see docs/datastores.md). Every statement carries the
`cachewarden_probe` mark so that it can be left out of the statements reported.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
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
_SERVER = text("""
    SELECT current_setting('max_connections')::int AS cachewarden_probe, version(),
           current_setting('shared_preload_libraries') AS preload,
           EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS installed
""")
_SESSIONS = text("""
    SELECT COALESCE(sum(sessions_abandoned), 0) AS cachewarden_probe, COALESCE(sum(sessions_fatal), 0),
           COALESCE(sum(sessions_killed), 0),
           (SELECT COALESCE(sum(seq_scan), 0) FROM pg_stat_user_tables)
    FROM pg_stat_database
""")
# What SQLAlchemy's dialect sends once per new connection, which cannot carry the mark: a few exact
# texts, SHOW commands and system-catalog reads (an application's own statements rarely are either).
_OWN_UNMARKED = ("select current_schema()", "SELECT $1")
_NOT_OWN = (
    "s.query NOT LIKE :mark AND s.query NOT ILIKE '%pg\\_catalog.%' AND s.query NOT ILIKE 'show %' "
    "AND s.query NOT IN (" + ", ".join(f"'{q}'" for q in _OWN_UNMARKED) + ")"
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
    max_connections, version, preload, installed = (await conn.execute(_SERVER)).one()
    connections = dict.fromkeys([*STATES.values(), "other"], 0)
    longest = 0.0
    for state, n, state_longest in (await conn.execute(_ACTIVITY)).all():
        label = STATES.get(state, "other")
        connections[label] += int(n)
        longest = max(longest, float(state_longest))
    abandoned, fatal, killed, seq_scans = (await conn.execute(_SESSIONS)).one()
    stats = DbStats(
        version=str(version).split(" on ", 1)[0],
        connections=connections,
        max_connections=int(max_connections),
        longest_transaction_seconds=longest,
        aborted={"abandoned": int(abandoned), "fatal": int(fatal), "killed": int(killed)},
        full_scans=int(seq_scans),
    )
    preloaded = "pg_stat_statements" in str(preload)
    if not (preloaded and installed):
        missing = [] if preloaded else ["add pg_stat_statements to shared_preload_libraries and restart"]
        if not installed:
            missing.append("CREATE EXTENSION pg_stat_statements in this database")
        stats.statements_unavailable = (
            "pg_stat_statements is not available, so statement statistics are not measured ("
            + "; ".join(missing) + ")"
        )
        return stats
    params = {"mark": f"%{PROBE_MARK}%", "text_length": opts.text_length}
    stats.top = _digests(await conn.execute(_TOP, {**params, "n": opts.top_n}))
    slow = (await conn.execute(
        _SLOW, {**params, "n": opts.listed, "threshold_ms": opts.slow_threshold * 1000}
    )).all()
    stats.slow, stats.slow_total = _digests(slow), (int(slow[0].matching) if slow else 0)
    return stats


def _digests(rows: Any) -> list[Digest]:
    return [
        Digest(digest=str(r[0]), schema=r.schema_name, text=" ".join(str(r.text).split()),
               calls=float(r.calls), seconds=float(r.seconds))
        for r in rows
    ]
