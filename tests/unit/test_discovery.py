"""Database and Redis targets derived from a Laravel app's .env, and the rule that explicit ones win."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from exporter.collectors import build_collectors
from exporter.config import Config, parse
from exporter.discovery import discovered_databases, discovered_redis

LARAVEL_ENV = """\
APP_NAME=Shop
DB_CONNECTION=mysql
DB_HOST=db.internal
DB_PORT=3307
DB_DATABASE=shop
DB_USERNAME=shop_user
DB_PASSWORD="p@ss:w/rd-31"
REDIS_HOST=cache.internal
REDIS_PASSWORD=redis-pw-77
REDIS_PORT=6380
REDIS_DB=2
REDIS_CACHE_DB=5
"""


def app_config(tmp_path: Path, env: str, **sections: Any) -> Config:
    root = tmp_path / "shop"
    (root / "resources" / "views").mkdir(parents=True)
    (root / "storage" / "framework" / "views").mkdir(parents=True)
    (root / ".env").write_text(env)
    return parse({"laravel": [{"name": "shop", "root": str(root)}], **sections})


def test_a_laravel_root_alone_yields_its_database_and_one_target_for_its_redis_server(
    tmp_path: Path,
) -> None:
    config = app_config(tmp_path, LARAVEL_ENV)
    [db] = discovered_databases(config)
    assert (db.name, db.laravel) == ("shop", "shop")
    assert db.url == "mysql+asyncmy://shop_user@db.internal:3307/shop"
    assert db.password() == "p@ss:w/rd-31"
    # REDIS_CACHE_DB=5 lives on the same server: its keys are counted per db by that one target.
    [redis] = discovered_redis(config)
    assert (redis.name, redis.url) == ("shop", "redis://cache.internal:6380/2")
    assert redis.password() == "redis-pw-77"


def test_two_apps_on_one_redis_server_share_one_target_and_a_watched_server_gets_none(
    tmp_path: Path,
) -> None:
    roots = []
    for name, env in (("shop", "REDIS_HOST=10.0.0.5\nREDIS_DB=0\n"),
                      ("blog", "REDIS_HOST=10.0.0.5\nREDIS_DB=3\n"), ("api", "REDIS_HOST=10.0.0.6\n")):
        root = tmp_path / name
        (root / "resources" / "views").mkdir(parents=True)
        (root / "storage" / "framework" / "views").mkdir(parents=True)
        (root / ".env").write_text(env)
        roots.append({"name": name, "root": str(root)})
    config = parse({"laravel": roots})
    assert [(t.name, t.url) for t in discovered_redis(config)] == [
        ("shop", "redis://10.0.0.5:6379/0"), ("api", "redis://10.0.0.6:6379/0")]
    watched = parse({"laravel": roots, "redis": [{"name": "main", "url": "redis://10.0.0.6:6379/2"}]})
    assert [t.name for t in discovered_redis(watched)] == ["shop"]


@pytest.mark.parametrize("env", ["DB_CONNECTION=mysql\nDB_PORT=33o6\nREDIS_HOST=r\nREDIS_PORT=63 79\n",
                                 "DB_CONNECTION=pgsql\nDB_PORT=-1\nREDIS_HOST=r\nREDIS_PORT=70000\n"])
def test_a_port_that_is_not_a_number_skips_that_target_with_a_warning_and_builds_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, env: str,
) -> None:
    config = app_config(tmp_path, env, collectors={
        "views": {"enabled": False}, "fpm": {"enabled": False}, "opcache": {"enabled": False}})
    with caplog.at_level(logging.WARNING):
        assert build_collectors(config) == []
    assert "DB_PORT=" in caplog.text
    assert "REDIS_PORT=" in caplog.text


def test_passwords_stay_out_of_repr_and_dumps(tmp_path: Path) -> None:
    config = app_config(tmp_path, LARAVEL_ENV)
    targets = [*discovered_databases(config), *discovered_redis(config)]
    for t in targets:
        for shown in (repr(t), str(t), str(t.model_dump()), t.model_dump_json(), t.url):
            assert "p@ss:w/rd-31" not in shown
            assert "redis-pw-77" not in shown


def test_postgres_and_null_passwords(tmp_path: Path) -> None:
    config = app_config(tmp_path, "DB_CONNECTION=pgsql\nDB_DATABASE=shop\nDB_USERNAME=app\n"
                                  "DB_PASSWORD=\nREDIS_HOST=127.0.0.1\nREDIS_PASSWORD=null\n"
                                  "REDIS_DB=1\nREDIS_CACHE_DB=1\n")
    [db] = discovered_databases(config)
    assert db.url == "postgresql+asyncpg://app@127.0.0.1:5432/shop"
    assert db.password() is None
    [redis] = discovered_redis(config)
    assert (redis.name, redis.url, redis.password()) == ("shop", "redis://127.0.0.1:6379/1", None)


def test_an_env_without_database_or_redis_settings_yields_nothing(tmp_path: Path) -> None:
    config = app_config(tmp_path, "APP_NAME=Shop\nCACHE_DRIVER=file\n")
    assert discovered_databases(config) == []
    assert discovered_redis(config) == []


def test_sqlite_apps_get_no_database_target(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        config = app_config(tmp_path, "DB_CONNECTION=sqlite\nDB_DATABASE=/srv/db.sqlite\n")
        assert discovered_databases(config) == []
    assert "sqlite" in caplog.text


def test_explicit_entries_linked_to_the_app_replace_discovery(tmp_path: Path) -> None:
    config = app_config(
        tmp_path, LARAVEL_ENV,
        databases=[{"name": "primary", "url": "mysql+asyncmy://exporter@10.0.0.9/shop", "laravel": "shop"}],
        redis=[{"name": "sessions", "url": "redis://10.0.0.8:6379/0", "laravel": "shop"}],
    )
    assert discovered_databases(config) == []
    assert discovered_redis(config) == []


def test_an_explicit_entry_with_a_derived_name_wins_and_unlinked_ones_do_not_stop_discovery(
    tmp_path: Path,
) -> None:
    config = app_config(
        tmp_path, LARAVEL_ENV,
        databases=[{"name": "analytics", "url": "postgresql+asyncpg://ro@10.0.0.7/stats"}],
        redis=[{"name": "shop", "url": "redis://10.0.0.8:6379/0"}],
    )
    assert [t.name for t in discovered_databases(config)] == ["shop"]
    assert discovered_redis(config) == []  # the name is taken


def test_build_collectors_adds_the_discovered_targets(tmp_path: Path) -> None:
    config = app_config(tmp_path, LARAVEL_ENV, collectors={
        "views": {"enabled": False}, "fpm": {"enabled": False}, "opcache": {"enabled": False}})
    keys = {c.key for c in build_collectors(config)}
    assert {("sql", "shop"), ("redis", "shop")} <= keys
    assert ("redis", "shop-cache") not in keys


def test_a_derived_url_that_is_not_a_valid_target_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "app"
    (root / "resources" / "views").mkdir(parents=True)
    (root / "storage" / "framework" / "views").mkdir(parents=True)
    (root / ".env").write_text("REDIS_HOST=127.0.0.1\nREDIS_DB=cache\n")
    config = parse({"laravel": [{"name": "app", "root": str(root)}]})
    with caplog.at_level(logging.WARNING):
        assert discovered_redis(config) == []
    assert "no Redis target 'app'" in caplog.text
