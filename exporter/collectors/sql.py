"""How a MariaDB/MySQL or PostgreSQL server is measured: connections, slow statements, top digests.

    cachewarden_db_up{target="main"} 1
    cachewarden_db_connections{target="main",state="idle"} 12
    cachewarden_db_statement_seconds_total{target="main",digest="6f3c…"} 81.2
    cachewarden_db_statement_info{target="main",digest="6f3c…",schema="shop",text="SELECT …"} 1

Statement digests are capped at the `top_n` heaviest by total time and their text appears only in the
`_info` series, truncated: digest tables are what make unbounded SQL exporters exhaust Prometheus.
Reading them is also what costs the server most, so on MariaDB/MySQL they are read every
`digest_interval` and the last reading is exported again in between.
An unreachable server, a refused login or a server that does not answer within `ANSWER_SHARE` of the
collector's timeout (hung, frozen, swapping) yields `cachewarden_db_up 0` and a PROBLEM check whose
text never contains the password. A login that works is `cachewarden_db_up 1` whatever the account may
read. Everything but the login, the version and max_connections is an optional part (global status,
the longest transaction, sessions by state, statement digests, …): one the server refuses (a missing
grant, an extension at another version, a column this server version lacks) costs that part only,
leaves its series out, is a NOTE naming the fix, and shows in cachewarden_db_part_up{part} 0 and
cachewarden_db_part_errors_total{part}.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from exporter.collectors.base import ITEM_CAP, Check, Collector, Observation, Verdict
from exporter.config import DatabaseTarget
from exporter.metrics import Samples, counter, gauge, info
from exporter.sql.engine import create_engine, describe_error
from exporter.sql.stats import STATEMENT_DIGESTS, DbStats, Digest, DigestSchedule, StatementOptions

log = logging.getLogger(__name__)

# Share of the collector's timeout the server has to answer in. The rest is for dropping the hung
# connections, so that the collection itself ends in time and reports `db_up 0`, rather than the
# scheduler cutting it off (a hung server is a finding about the target, as a dead one is).
ANSWER_SHARE = 0.75

DB_UP = gauge("cachewarden_db_up", "1 if the database server answered, else 0.")
DB_CONNECTIONS = gauge("cachewarden_db_connections", "Client connections by state.", ("state",))
DB_MAX_CONNECTIONS = gauge("cachewarden_db_max_connections", "The server's max_connections.")
DB_MAX_USED_CONNECTIONS = gauge(
    "cachewarden_db_max_used_connections", "Most connections open at once since start (MariaDB/MySQL)."
)
DB_ABORTED_CONNECTIONS = counter(
    "cachewarden_db_aborted_connections_total",
    "Connections that failed or ended abnormally; kind connect/client (MariaDB/MySQL) or "
    "abandoned/fatal/killed (PostgreSQL).",
    ("kind",),
)
DB_LONGEST_TRANSACTION = gauge(
    "cachewarden_db_longest_transaction_seconds", "Age of the oldest open transaction (0 if none)."
)
DB_SLOW_QUERIES = counter(
    "cachewarden_db_slow_queries_total",
    "Statements slower than long_query_time (MariaDB/MySQL counter; see _long_query_time_seconds).",
)
DB_LONG_QUERY_TIME = gauge(
    "cachewarden_db_long_query_time_seconds",
    "The server's long_query_time, the threshold of the slow queries counter (MariaDB/MySQL).",
)
DB_FULL_SCANS = counter(
    "cachewarden_db_full_scans_total",
    "Full table scans: Select_scan (MariaDB/MySQL) or sequential scans of user tables (PostgreSQL).",
)
DB_STATEMENT_STATS_AVAILABLE = gauge(
    "cachewarden_db_statement_stats_available",
    "1 if per-statement statistics (performance_schema digests, pg_stat_statements) can be read.",
)
DB_SLOW_STATEMENTS = gauge(
    "cachewarden_db_slow_statements", "Statement shapes whose mean time exceeds the slow threshold."
)
DB_NO_INDEX_STATEMENTS = gauge(
    "cachewarden_db_no_index_statements", "Statement shapes that ran without using an index (MariaDB/MySQL)."
)
DB_STATEMENT_CALLS = counter(
    "cachewarden_db_statement_calls_total", "Executions of one of the top statement digests.", ("digest",)
)
DB_STATEMENT_SECONDS = counter(
    "cachewarden_db_statement_seconds_total", "Time spent in one of the top statement digests.", ("digest",)
)
DB_STATEMENT_ROWS_EXAMINED = counter(
    "cachewarden_db_statement_rows_examined_total", "Rows read by one top digest (MariaDB/MySQL).",
    ("digest",),
)
DB_STATEMENT_NO_INDEX_USED = counter(
    "cachewarden_db_statement_no_index_used_total",
    "Executions of one top digest that used no (good) index (MariaDB/MySQL).",
    ("digest",),
)
DB_PART_UP = gauge(
    "cachewarden_db_part_up",
    "1 if the optional part of the reading was read at the last collection, 0 if not (see `check`).",
    ("part",),
)
DB_PART_ERRORS = counter(
    "cachewarden_db_part_errors_total",
    "Readings of an optional part the server refused or answered in an unexpected shape.",
    ("part",),
)
DB_STATEMENT_INFO = info(
    "cachewarden_db_statement_info", "Schema and truncated text of a top statement digest.",
    ("digest", "schema", "text"),
)


class SqlCollector(Collector):
    kind = "sql"
    up = DB_UP
    metrics = (
        DB_UP, DB_CONNECTIONS, DB_MAX_CONNECTIONS, DB_MAX_USED_CONNECTIONS, DB_ABORTED_CONNECTIONS,
        DB_LONGEST_TRANSACTION, DB_SLOW_QUERIES, DB_LONG_QUERY_TIME, DB_FULL_SCANS,
        DB_STATEMENT_STATS_AVAILABLE, DB_SLOW_STATEMENTS, DB_NO_INDEX_STATEMENTS, DB_STATEMENT_CALLS,
        DB_STATEMENT_SECONDS,
        DB_STATEMENT_ROWS_EXAMINED, DB_STATEMENT_NO_INDEX_USED, DB_STATEMENT_INFO, DB_PART_UP, DB_PART_ERRORS,
    )

    def __init__(self, target: DatabaseTarget, *, interval: float, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(target.name, interval=interval, timeout=timeout)
        self._password = target.password()
        self._bounded = create_engine(target, connect_timeout=max(1.0, timeout / 2))
        self._options = StatementOptions(
            top_n=target.top_n, slow_threshold=target.slow_threshold,
            text_length=target.digest_text_length, listed=ITEM_CAP,
        )
        self._warn_ratio = target.connections_warn_ratio
        self._last_error: str | None = None
        self._clock = clock
        self._digest_schedule = DigestSchedule(target.digest_interval, interval)
        self._digest_reading: DbStats | None = None
        # Every part of the dialect counted from zero, so that a rate() sees its first error.
        self._part_errors = dict.fromkeys(self._bounded.parts, 0)

    async def collect(self) -> Observation:
        started = self._clock()
        due = self._digest_reading is None or self._digest_schedule.due(started)
        options = dataclasses.replace(self._options, read_digests=due)
        answer_within = self.timeout * ANSWER_SHARE
        try:
            async with asyncio.timeout(answer_within):
                async with self._bounded.engine.connect() as conn:
                    stats = await self._bounded.read(conn, options)
        except TimeoutError:
            # The pooled connections wait on a server that does not answer: drop them without the
            # goodbye a close would send and wait for, and connect afresh next time.
            await self._bounded.engine.dispose(close=False)
            return self._unreachable(f"no answer within {answer_within:g}s")
        except (SQLAlchemyError, OSError) as exc:
            return self._unreachable(describe_error(exc, self._password))
        if self._last_error is not None:
            log.info("sql/%s reachable again", self.target)
        self._last_error = None
        self._keep_or_reuse_digests(stats, started)
        for part, failure in stats.parts.items():
            if failure is not None and failure.error and (part != STATEMENT_DIGESTS or stats.digests_fresh):
                self._part_errors[part] = self._part_errors.get(part, 0) + 1
        return Observation(self._samples(stats), self._checks(stats), _details(stats))

    def _keep_or_reuse_digests(self, stats: DbStats, started: float) -> None:
        """Statement digests are read every `digest_interval`; in between, the last reading stands in."""
        if stats.digests_fresh:
            self._digest_reading = stats
            self._digest_schedule.read_at(started)
        elif self._digest_reading is not None:
            stats.carry_digests_from(self._digest_reading)

    def _unreachable(self, error: str) -> Observation:
        if error != self._last_error:  # once per distinct failure, not every interval
            log.warning("sql/%s unreachable: %s", self.target, error)
        self._last_error = error
        samples = self.new_samples()
        samples.add(DB_UP, 0)
        self._add_part_errors(samples)
        return Observation(samples, [Check("server reachable", Verdict.PROBLEM, f"cannot query: {error}")])

    def _add_part_errors(self, s: Samples) -> None:
        for part, n in self._part_errors.items():
            s.add(DB_PART_ERRORS, n, part=part)

    def _samples(self, stats: DbStats) -> Samples:
        s = self.new_samples()
        s.add(DB_UP, 1)
        self._add_part_errors(s)
        for part, failure in stats.parts.items():
            s.add(DB_PART_UP, 1 if failure is None else 0, part=part)
        for state, n in stats.connections.items():
            s.add(DB_CONNECTIONS, n, state=state)
        s.add(DB_MAX_CONNECTIONS, stats.max_connections)
        if stats.max_used_connections is not None:
            s.add(DB_MAX_USED_CONNECTIONS, stats.max_used_connections)
        for kind, n in stats.aborted.items():
            s.add(DB_ABORTED_CONNECTIONS, n, kind=kind)
        if stats.longest_transaction_seconds is not None:
            s.add(DB_LONGEST_TRANSACTION, stats.longest_transaction_seconds)
        if stats.slow_queries is not None:
            s.add(DB_SLOW_QUERIES, stats.slow_queries)
        if stats.long_query_time is not None:
            s.add(DB_LONG_QUERY_TIME, stats.long_query_time)
        if stats.full_scans is not None:
            s.add(DB_FULL_SCANS, stats.full_scans)
        available = stats.statements_unavailable is None
        s.add(DB_STATEMENT_STATS_AVAILABLE, 1 if available else 0)
        if not available:
            return s
        s.add(DB_SLOW_STATEMENTS, stats.slow_total)
        if stats.no_index_total is not None:
            s.add(DB_NO_INDEX_STATEMENTS, stats.no_index_total)
        for d in stats.top:
            s.add(DB_STATEMENT_CALLS, d.calls, digest=d.digest)
            s.add(DB_STATEMENT_SECONDS, d.seconds, digest=d.digest)
            if d.rows_examined is not None:
                s.add(DB_STATEMENT_ROWS_EXAMINED, d.rows_examined, digest=d.digest)
            if d.no_index_used is not None:
                s.add(DB_STATEMENT_NO_INDEX_USED, d.no_index_used, digest=d.digest)
            s.add_info(DB_STATEMENT_INFO, digest=d.digest, schema=d.schema, text=d.text)
        return s

    def _checks(self, stats: DbStats) -> list[Check]:
        checks = [Check("server reachable", Verdict.OK, stats.version)]
        used, limit = stats.connections_total, stats.max_connections
        peak = f"; peak {stats.max_used_connections}" if stats.max_used_connections is not None else ""
        if stats.connections and limit > 0:
            ratio = used / limit
            checks.append(Check(
                "connections", Verdict.PROBLEM if ratio >= self._warn_ratio else Verdict.OK,
                f"{used} of {limit} connections in use ({ratio:.0%}{peak})",
            ))
        else:  # not read (see the part's NOTE): an unknown count is not "0 in use"
            checks.append(Check("connections", Verdict.NOTE,
                                f"connections in use not measured; max_connections = {limit}"))
        checks.extend(Check(name, Verdict.NOTE, summary) for name, summary in stats.notes)
        checks.extend(Check(f.check, Verdict.NOTE, f.summary) for part, f in stats.parts.items()
                      if f is not None and part != STATEMENT_DIGESTS)
        if stats.statements_unavailable is not None:
            checks.append(Check("statement statistics", Verdict.NOTE, stats.statements_unavailable))
            return checks
        threshold_ms = self._options.slow_threshold * 1000
        checks.append(_listing(
            "slow statements", stats.slow, stats.slow_total,
            f"no statement averages more than {threshold_ms:g} ms",
            f"{{n}} statement shapes average more than {threshold_ms:g} ms",
        ))
        if stats.no_index_total is not None:
            checks.append(_listing(
                "missing indexes", stats.no_index, stats.no_index_total,
                "every statement used an index", "{n} statement shapes ran without an index",
            ))
        return checks

    async def close(self) -> None:
        await self._bounded.engine.dispose()


def _listing(name: str, digests: list[Digest], total: int, ok: str, problem: str) -> Check:
    if not total:
        return Check(name, Verdict.OK, ok)
    items = tuple(f"{d.mean_seconds * 1000:.1f} ms × {d.calls:.0f}: {d.text}" for d in digests)
    return Check(name, Verdict.PROBLEM, problem.format(n=total), items, total)


def _details(stats: DbStats) -> dict[str, object]:
    def rows(ds: list[Digest]) -> list[dict[str, object]]:
        return [{"digest": d.digest, "schema": d.schema, "text": d.text, "calls": d.calls,
                 "mean_seconds": d.mean_seconds} for d in ds]

    return {"slow_statements": rows(stats.slow), "no_index_statements": rows(stats.no_index)}
