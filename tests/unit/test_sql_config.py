"""Database and Redis target URLs that cannot work are configuration errors, reported before start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import EXIT_BAD_CONFIG, main
from exporter.config import ConfigError, parse


@pytest.mark.parametrize(("url", "problem"), [
    ("mysql+asyncmy://u@h:abc/d", "not a database URL"),
    ("mysql+pymysql://", "expected a mysql+asyncmy://"),
    ("mysql+pymysql://u@h/d", "expected a mysql+asyncmy://"),
    ("postgresql+psycopg2://u@h/d", "expected a mysql+asyncmy://"),
    ("sqlite:///tmp/x.db", "expected a mysql+asyncmy://"),
    ("mysql+asyncmy:///d", "names no host"),
    ("mysql+asyncmy://u@h:70000/d", "port 70000"),
])
def test_a_database_url_that_cannot_work_is_named_by_its_path(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse({"databases": [{"name": "main", "url": url}]})
    [message] = raised.value.problems
    assert message.startswith("databases[0].url: ")
    assert problem in message


@pytest.mark.parametrize("url", [
    "mysql://u@h/d", "mysql+asyncmy://u@h:3306/d", "mariadb+asyncmy://u@h/d",
    "postgresql+asyncpg://u@[::1]:5432/d", "mysql+asyncmy://u@/d?unix_socket=/run/mysqld/mysqld.sock",
])
def test_database_urls_of_the_installed_drivers_are_accepted(url: str) -> None:
    assert parse({"databases": [{"name": "main", "url": url}]}).databases[0].url == url


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://h:63o9/0", "port '63o9'"), ("redis://h:6379/cache", "database 'cache'"),
    ("http://h:6379", "expected a redis://"),
])
def test_a_redis_url_that_cannot_work_is_named_by_its_path(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse({"redis": [{"name": "cache", "url": url}]})
    [message] = raised.value.problems
    assert message.startswith("redis[0].url: ")
    assert problem in message


@pytest.mark.parametrize(("url", "problem"), [
    # Each of these loaded, then failed every collection with "connect() got an unexpected keyword".
    ("postgresql://u@h/test?options=-c%20search_path%3Dx", "query parameter 'options' is not one the "
     "driver accepts (asyncpg takes no libpq options string"),
    ("postgresql://u@h/test?foo=1", "query parameter 'foo' is not one the driver accepts "
     "(asyncpg.connect() has no such argument); accepted: gsslib, host, "),
    ("mysql+asyncmy://u@h/test?foo=1", "query parameter 'foo' is not one the driver accepts "
     "(asyncmy's connect() has no such argument); accepted: charset, "),
    ("postgresql://u@h/test?sslmode=required", "query parameter 'sslmode' is 'required', expected one of "
     "disable, allow, prefer, require, verify-ca, verify-full"),
    ("postgresql://u@h/test?sslmode=require&ssl=require", "'ssl' and 'sslmode' say the same thing"),
    ("postgresql://u@h/test?ssl=require&ssl=disable", "query parameter 'ssl' is given twice"),
    ("postgresql://u@h/test?timeout=100", "cachewarden sets it from collectors.sql.timeout"),
    ("mysql://u@h/test?connect_timeout=100", "cachewarden sets it from collectors.sql.timeout"),
    ("mysql://u@h/test?ssl_mode=REQUIRED", "asyncmy takes ssl_ca"),
    ("mysql://u@h/test?compress=true", "query parameter 'compress' is not one the driver accepts"),
    ("mysql://u@h/test?read_timeout=soon", "query parameter 'read_timeout' is 'soon', expected a whole"),
])
def test_a_database_url_query_parameter_the_driver_lacks_is_named(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse({"databases": [{"name": "main", "url": url}]})
    [message] = raised.value.problems
    assert message.startswith("databases[0].url: ")
    assert problem in message


ACCEPTED_QUERIES = [
    "postgresql://u@h/test?sslmode=require", "postgresql+asyncpg://u@h/test?ssl=verify-full",
    "postgresql://u@h/test?target_session_attrs=read-write&prepared_statement_cache_size=0",
    "postgresql://u@/test?host=/run/postgresql&passfile=/etc/pgpass",
    "mysql+asyncmy://u@h/test?charset=utf8mb4&ssl_ca=/etc/ca.pem&ssl_check_hostname=false",
    "mariadb://u@h/test?ssl_cert=/c.pem&ssl_key=/k.pem&read_timeout=5&program_name=cachewarden",
]


@pytest.mark.parametrize("url", ACCEPTED_QUERIES)
def test_every_accepted_query_parameter_reaches_a_driver_argument(url: str) -> None:
    # The oracle is the driver: what SQLAlchemy's dialect makes of the URL must bind to its connect().
    import inspect

    import asyncpg
    from sqlalchemy.ext.asyncio import create_async_engine

    from exporter.sql.engine import database_url

    assert parse({"databases": [{"name": "main", "url": url}]}).databases[0].url == url
    engine = create_async_engine(database_url(url, None))
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    if engine.dialect.name == "postgresql":
        kwargs.pop("prepared_statement_cache_size", None)  # SQLAlchemy's adapter takes it
        inspect.signature(asyncpg.connect).bind(**kwargs)
        assert "sslmode" not in kwargs
    else:
        from asyncmy.connection import Connection
        inspect.signature(Connection).bind(**kwargs)


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://h:6379/0?socket_timeout=100", "query parameter 'socket_timeout' is not one the driver "
     "accepts (cachewarden sets the connection's timeouts"),
    ("redis://h:6379/0?protocol=3", "query parameter 'protocol' is not one"),
    ("redis://h:6379/0?foo=1", "query parameter 'foo' is not one the driver accepts"),
    ("redis://h:6379/0?ssl_cert_reqs=none", "only a rediss:// URL takes TLS options"),
    ("rediss://h:6379/0?ssl_cert_reqs=maybe", "query parameter 'ssl_cert_reqs' is 'maybe', expected"),
    ("unix:///run/redis.sock?db=x", "query parameter 'db' is 'x', expected a whole number"),
])
def test_a_redis_url_query_parameter_that_cannot_work_is_named(url: str, problem: str) -> None:
    for data, path in (({"redis": [{"name": "cache", "url": url}]}, "redis[0].url"),
                       ({"heal": {"redis_url": url}}, "heal.redis_url")):
        with pytest.raises(ConfigError) as raised:
            parse(data)
        [message] = raised.value.problems
        assert message.startswith(f"{path}: ")
        assert problem in message


@pytest.mark.parametrize("url", ["redis://h:6379?db=3", "unix:///run/redis.sock?db=1",
                                 "rediss://h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem"])
def test_redis_url_query_parameters_redis_py_takes_are_accepted(url: str) -> None:
    from redis.asyncio import Redis

    assert parse({"redis": [{"name": "cache", "url": url}]}).redis[0].url == url
    client = Redis.from_url(url)
    connection = client.connection_pool.make_connection()  # unknown keywords would raise here
    assert connection is not None


def test_check_exits_2_without_a_traceback_for_a_bad_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "cachewarden.yaml"
    config.write_text("databases:\n  - name: main\n    url: mysql+asyncmy://u@h:abc/d\n")
    assert main(["check", "--config.file", str(config)]) == EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert "databases[0].url: not a database URL" in err
    assert "Traceback" not in err
