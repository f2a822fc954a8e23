"""A Laravel root alone, with passwords in its .env, watched end to end: real MariaDB and real Redis."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from exporter.collectors import build_collectors
from exporter.collectors.redis_server import REDIS_DB_KEYS, REDIS_UP
from exporter.collectors.sql import DB_UP
from exporter.config import parse
from exporter.scheduler import Scheduler
from tests.integration.test_redis import PrivateRedis
from tests.support.disclosure import assert_nowhere, shown_to_people
from tests.support.mariadb import PrivateMariaDB, mariadb_server

__all__ = ["mariadb_server"]  # a fixture, used by name

pytestmark = pytest.mark.integration

DB_PASSWORD = "db-pw:w/#8841"  # characters a URL would have to escape
REDIS_PASSWORD = "redis-pw-5521ab"


@pytest.fixture
def redis_with_password(tmp_path: Path) -> PrivateRedis:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    (tmp_path / "redis").mkdir()
    return PrivateRedis(tmp_path / "redis", password=REDIS_PASSWORD)


async def test_a_laravel_root_alone_is_watched_with_the_passwords_from_its_env(
    mariadb_server: PrivateMariaDB, redis_with_password: PrivateRedis, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mariadb_server.sql("DROP USER IF EXISTS 'cw_shop'@'127.0.0.1'; "
                       f"CREATE USER 'cw_shop'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
                       "CREATE DATABASE IF NOT EXISTS shop; GRANT ALL ON shop.* TO 'cw_shop'@'127.0.0.1'")
    redis_with_password.start()
    root = tmp_path / "shop"
    (root / "resources" / "views").mkdir(parents=True)
    (root / "storage" / "framework" / "views").mkdir(parents=True)
    (root / ".env").write_text(
        f"DB_CONNECTION=mysql\nDB_HOST=127.0.0.1\nDB_PORT={mariadb_server.port}\nDB_DATABASE=shop\n"
        f'DB_USERNAME=cw_shop\nDB_PASSWORD="{DB_PASSWORD}"\nCACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\n'
        f"REDIS_PORT={redis_with_password.port}\nREDIS_PASSWORD={REDIS_PASSWORD}\nREDIS_DB=0\n"
        "REDIS_CACHE_DB=1\n"
    )
    config = parse({"laravel": [{"name": "shop", "root": str(root)}], "collectors": {
        "views": {"enabled": False}, "fpm": {"enabled": False}, "opcache": {"enabled": False}}})
    scheduler = Scheduler(build_collectors(config))
    try:
        with caplog.at_level(logging.DEBUG):
            statuses = await scheduler.collect_all()
        assert sorted(s.collector.key for s in statuses) == [("redis", "shop"), ("sql", "shop")]
        redis_obs = scheduler.status("redis", "shop").observation
        sql_obs = scheduler.status("sql", "shop").observation
        assert redis_obs is not None
        assert sql_obs is not None
        assert redis_obs.samples.value(REDIS_UP) == 1
        assert redis_obs.samples.value(REDIS_DB_KEYS, db="0") == 0
        assert sql_obs.samples.value(DB_UP) == 1
        assert_nowhere((DB_PASSWORD, REDIS_PASSWORD),
                       shown_to_people(scheduler, caplog.text, *scheduler.collectors))
    finally:
        await scheduler.close()
        redis_with_password.stop()
