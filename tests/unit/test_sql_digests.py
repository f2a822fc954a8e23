"""Ranking MariaDB/MySQL statement digests from one pass of numbers, texts looked up only when unknown."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from exporter.collectors.sql import SqlCollector
from exporter.config import DatabaseTarget
from exporter.sql import mysql
from exporter.sql.stats import DbStats, KnownDigests, StatementOptions

PS = 10**12  # picoseconds in a second


class FakeDigestTable:
    """Answers the two digest statements the way the server would, and counts the passes."""

    def __init__(self, rows: list[tuple[str, str, int, int, int, int]], texts: dict[str, str]) -> None:
        self.rows, self.texts = rows, texts
        self.lookups: list[dict[str, Any]] = []

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        if statement is mysql._DIGEST_NUMBERS:
            return _Result(list(self.rows))
        assert statement is mysql._DIGEST_TEXTS
        assert params is not None
        self.lookups.append(params)
        own = {d for d, t in self.texts.items() if mysql.PROBE_MARK in t}
        return _Result([
            (d, t[: params["text_length"]], d in own, bool(re.search("password|identified", t, re.I)))
            for d, t in self.texts.items()
            if d in params["digests"] or (params["learn"] and d in own)
        ])


class _Result(list[tuple[Any, ...]]):
    def all(self) -> list[tuple[Any, ...]]:
        return list(self)


def options(known: KnownDigests, top_n: int = 3) -> StatementOptions:
    return StatementOptions(top_n=top_n, slow_threshold=0.1, text_length=40, listed=2, known=known)


async def read(table: FakeDigestTable, opts: StatementOptions) -> DbStats:
    stats = DbStats(version="10.11.6-MariaDB", connections={}, max_connections=151)
    await mysql._read_digests(table, opts, stats)  # type: ignore[arg-type]
    return stats


def app_text(i: int) -> str:
    return f"SELECT `c{i}` FROM `t`"  # noqa: S608 - a digest text, never run


def app_rows(n: int) -> list[tuple[str, str, int, int, int, int]]:
    """`n` application digests, app0 the heaviest, each ran 10 times without an index."""
    return [(f"app{i}", "shop", 10, (n - i) * PS // 100, 5, 10) for i in range(n)]


async def test_own_statements_leading_the_table_are_left_out_and_top_n_stays_full() -> None:
    own = [(f"own{i}", "", 1000, 50 * PS, 0, 1000) for i in range(5)]  # heavier than any app statement
    texts = {f"app{i}": app_text(i) for i in range(8)}
    texts |= {f"own{i}": f"SELECT {i} AS {mysql.PROBE_MARK}" for i in range(5)}
    table = FakeDigestTable(own + app_rows(8), texts)

    stats = await read(table, options(KnownDigests()))

    assert [d.digest for d in stats.top] == ["app0", "app1", "app2"]
    assert stats.top[0].text == app_text(0)
    assert stats.no_index_total == 8  # the own statements also ran without an index, and do not count
    assert [d.digest for d in stats.no_index] == ["app0", "app1"]
    # The margin settled the texts in one lookup; the other learning pass finds the lookup's own shape.
    assert len(table.lookups) == mysql._LEARNING_PASSES
    assert table.lookups[-1]["digests"] == ["", ""]  # padded: one shape for any number of digests


async def test_a_later_reading_looks_nothing_up_once_texts_and_own_shapes_are_known() -> None:
    texts = {f"app{i}": app_text(i) for i in range(8)} | {"own": f"SELECT {mysql.PROBE_MARK}"}
    table = FakeDigestTable([("own", "", 1, 99 * PS, 0, 1), *app_rows(8)], texts)
    known = KnownDigests()
    for _ in range(mysql._LEARNING_PASSES):
        await read(table, options(known))
    passes = len(table.lookups)

    stats = await read(table, options(known))

    assert len(table.lookups) == passes
    assert [d.digest for d in stats.top] == ["app0", "app1", "app2"]
    assert known.own == {"own"}
    assert set(known.texts) == {"app0", "app1", "app2"}  # only what is reported stays remembered


async def test_a_new_heavy_statement_is_looked_up_and_leads_the_next_reading() -> None:
    texts = {f"app{i}": app_text(i) for i in range(5)}
    table = FakeDigestTable(app_rows(4), texts)
    known = KnownDigests()
    await read(table, options(known))
    passes = len(table.lookups)
    table.rows.append(("app4", "shop", 1, 7 * PS, 0, 0))

    stats = await read(table, options(known))

    assert stats.top[0].digest == "app4"
    assert len(table.lookups) == passes + 1
    assert "app4" in table.lookups[-1]["digests"]
    assert not table.lookups[-1]["learn"]


async def test_a_digest_in_several_schemas_is_one_series_under_its_heaviest_schema() -> None:
    table = FakeDigestTable(
        [("d1", "a", 2, PS, 3, 0), ("d1", "b", 3, 4 * PS, 4, 1), ("d2", "a", 1, PS // 10, 0, 0)],
        {"d1": "SELECT `x`", "d2": "SELECT `y`"},
    )

    stats = await read(table, options(KnownDigests()))

    [d1, d2] = stats.top
    assert (d1.digest, d1.schema, d1.calls, d1.seconds, d1.rows_examined, d1.no_index_used) == (
        "d1", "b", 5.0, 5.0, 7.0, 1.0)
    assert d2.digest == "d2"
    assert stats.slow_total == 1  # d1: 1 s mean; d2: 0.1 s is not above the threshold
    assert [d.digest for d in stats.slow] == ["d1"]


async def test_a_digest_gone_between_the_two_passes_is_not_reported() -> None:
    table = FakeDigestTable(app_rows(3), {"app1": "SELECT 1", "app2": "SELECT 2"})  # app0 truncated away

    stats = await read(table, options(KnownDigests()))

    assert [d.digest for d in stats.top] == ["app1", "app2"]


async def test_another_server_version_forgets_what_was_learned() -> None:
    known = KnownDigests()
    known.forget_if_not("10.11.6-MariaDB")
    known.own.add("x")
    known.learning_passes = 2
    known.forget_if_not("11.4.2-MariaDB")
    assert (known.own, known.learning_passes) == (set(), 0)


def test_a_reading_that_skipped_digests_takes_the_earlier_ones() -> None:
    earlier = DbStats(version="v", connections={}, max_connections=1, slow_total=4, no_index_total=2)
    earlier.top = [mysql.Digest("d", "s", "SELECT 1", 1, 1)]
    later = DbStats(version="v", connections={}, max_connections=1, digests_fresh=False)
    later.carry_digests_from(earlier)
    assert (later.top, later.slow_total, later.no_index_total) == (earlier.top, 4, 2)


async def test_statements_naming_a_password_are_never_reported_nor_looked_up_again() -> None:
    long_prefix = "x" * 60  # the password keyword lies beyond the reported text length (40)
    texts = {f"app{i}": app_text(i) for i in range(3)} | {
        "role": "ALTER ROLE `shop` PASSWORD ?", "user": "CREATE USER ? @ ? Identified BY ?",
        "long": f"SELECT `{long_prefix}` FROM `users` WHERE `password` = ?",  # noqa: S608 - never run
    }
    rows = [("role", "", 9, 90 * PS, 0, 9), ("user", "", 9, 80 * PS, 0, 9),
            ("long", "shop", 9, 70 * PS, 0, 9), *app_rows(3)]
    table = FakeDigestTable(rows, texts)
    known = KnownDigests()

    stats = await read(table, options(known))
    passes = len(table.lookups)
    again = await read(table, options(known))

    for reading in (stats, again):
        assert [d.digest for d in reading.top] == ["app0", "app1", "app2"]
        assert not {"role", "user", "long"} & {d.digest for d in (*reading.slow, *reading.no_index)}
    assert known.withheld == {"role", "user", "long"}
    assert len(table.lookups) == passes  # known to be withheld: not looked up again


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_digests_are_read_every_digest_interval_counted_from_the_start_of_the_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    collector = SqlCollector(DatabaseTarget(name="main", url="mysql+asyncmy://u@127.0.0.1/d"),
                             interval=15, timeout=10, clock=clock)
    reads: list[float] = []

    async def read_stats(_conn: object, opts: StatementOptions) -> DbStats:
        if opts.read_digests:
            reads.append(clock.now)
        clock.now += 0.4  # a reading takes time, more so with the digests
        return DbStats(version="v", connections={}, max_connections=1, digests_fresh=opts.read_digests)

    class Connection:
        async def __aenter__(self) -> object:
            return object()

        async def __aexit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(collector, "_bounded", SimpleNamespace(
        engine=SimpleNamespace(connect=Connection), read=read_stats, dialect="mysql"))
    start = clock.now
    for tick in range(17):  # 4 minutes of collections, started a little late or early as tasks are
        clock.now = start + tick * 15 + (-0.3 if tick and tick % 4 == 0 else 0.3 if tick % 2 else 0.0)
        await collector.collect()

    assert [round(t - start) for t in reads] == [0, 60, 120, 180, 240]


async def test_statements_run_in_system_schemas_are_not_counted_as_missing_an_index() -> None:
    system = [(f"sys{i}", schema, 5, PS, 100, 5) for i, schema in
              enumerate(("information_schema", "performance_schema", "mysql", "sys", "INFORMATION_SCHEMA"))]
    texts = {d: "SELECT * FROM `TABLES`" for d, *_ in system} | {"app0": app_text(0)}
    table = FakeDigestTable([*system, ("app0", "shop", 5, PS, 100, 5)], texts)

    stats = await read(table, options(KnownDigests()))

    assert stats.no_index_total == 1
    assert [d.digest for d in stats.no_index] == ["app0"]
