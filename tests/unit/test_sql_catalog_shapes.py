"""The SQL query builders against the recorded column lists of every server and extension version in
support (tests/data/sql): each builds a query naming only columns that version has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.sql import mysql, postgres
from exporter.sql.stats import MissingColumnsError

DATA = Path(__file__).resolve().parent.parent / "data" / "sql"
DIGEST_TABLES = ("mariadb-10.11", "mariadb-11.4", "mysql-8.0", "mysql-8.4")
PGSS_VERSIONS = ("1.7", "1.8", "1.9", "1.10", "1.11")


def shape(name: str) -> frozenset[str]:
    return frozenset(line.split(" ", 1)[0] for line in (DATA / f"{name}.txt").read_text().splitlines())


@pytest.mark.parametrize("server", DIGEST_TABLES)
def test_the_digest_pass_names_only_columns_the_server_has_and_reads_every_number(server: str) -> None:
    columns = shape(f"digest-{server}")
    sql = str(mysql.digest_numbers_query(columns))
    named = set(re.findall(r"\b(?:SUM|COUNT)_[A-Z_]+|\bDIGEST\b|\bSCHEMA_NAME\b", sql))
    assert named <= columns
    assert {"SUM_ROWS_EXAMINED", "SUM_NO_INDEX_USED", "SUM_NO_GOOD_INDEX_USED"} <= named
    assert ", NULL" not in sql


def test_a_digest_table_without_an_optional_column_reads_the_rest() -> None:
    columns = shape("digest-mariadb-10.11") - {"SUM_ROWS_EXAMINED", "SUM_NO_GOOD_INDEX_USED"}
    sql = str(mysql.digest_numbers_query(columns))
    assert "SUM_ROWS_EXAMINED" not in sql
    assert "SUM_TIMER_WAIT, NULL, SUM_NO_INDEX_USED FROM" in sql


def test_a_digest_table_without_a_needed_column_is_a_missing_columns_error() -> None:
    with pytest.raises(MissingColumnsError, match="has no column SUM_TIMER_WAIT"):
        mysql.digest_numbers_query(shape("digest-mysql-8.4") - {"SUM_TIMER_WAIT"})


def test_an_unseen_digest_table_is_read_as_the_full_shape_so_the_server_names_the_grant() -> None:
    # An account without SELECT on performance_schema sees no columns in information_schema.
    assert mysql.digest_numbers_query(frozenset()) is not None


@pytest.mark.parametrize("version", PGSS_VERSIONS)
def test_statement_queries_read_the_time_column_of_the_extension_version(version: str) -> None:
    columns = shape(f"pg_stat_statements-{version}")
    top, slow = postgres.statement_queries(columns)
    expected = "total_time" if version == "1.7" else "total_exec_time"
    for sql in (str(top), str(slow)):
        assert set(re.findall(r"\bs\.([a-z_]+)", sql)) <= columns
        assert f"s.{expected}" in sql


def test_a_pg_stat_statements_without_any_time_column_is_a_missing_columns_error() -> None:
    columns = shape("pg_stat_statements-1.10") - {"total_exec_time"}
    with pytest.raises(MissingColumnsError, match="total_exec_time"):
        postgres.statement_queries(columns)
