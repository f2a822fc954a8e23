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


def test_check_exits_2_without_a_traceback_for_a_bad_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "cachewarden.yaml"
    config.write_text("databases:\n  - name: main\n    url: mysql+asyncmy://u@h:abc/d\n")
    assert main(["check", "--config.file", str(config)]) == EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert "databases[0].url: not a database URL" in err
    assert "Traceback" not in err
