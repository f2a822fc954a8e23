"""A Laravel root alone, with passwords in its .env, watched end to end: real MariaDB and real Redis."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from exporter.collectors import build_collectors
from exporter.collectors.redis_server import REDIS_DB_KEYS, REDIS_UP
from exporter.collectors.sql import DB_UP
from exporter.collectors.views import VIEWS_COMPILED, VIEWS_UNCOMPILED
from exporter.config import Config, parse
from exporter.discovery import discover
from exporter.laravel_paths import APPLICATION_PHP
from exporter.report import build_report
from exporter.scheduler import Scheduler
from tests.integration.test_redis import PrivateRedis
from tests.support.blade import compile_views, requires_blade
from tests.support.disclosure import assert_nowhere, shown_to_people
from tests.support.mariadb import PrivateMariaDB, mariadb_server
from tests.support.processes import stop_process
from tests.support.wait import free_port, wait_for

__all__ = ["mariadb_server"]  # a fixture, used by name

pytestmark = pytest.mark.integration

DB_PASSWORD = "db-pw:w/#8841"  # characters a URL would have to escape
REDIS_PASSWORD = "redis-pw-5521ab"
ACL_PASSWORD = "acl-pw-7731cd"


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
        "views": {"enabled": False}, "fpm": {"enabled": False}, "opcache": {"enabled": False},
        "laravel_caches": {"enabled": False}}})
    scheduler = Scheduler(build_collectors(config))
    try:
        with caplog.at_level(logging.DEBUG):
            statuses = await scheduler.collect_all()
        assert sorted(s.collector.key for s in statuses) == [
            ("discovery", "shop"), ("redis", "shop"), ("sql", "shop")]
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


def _redis_server(base: Path, *config_lines: str) -> subprocess.Popen[bytes]:
    """A private redis-server from a config file (ACL users and unix sockets are config directives)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    conf = base / "redis.conf"
    conf.write_text("\n".join(['save ""', "appendonly no", f"dir {base}", *config_lines]) + "\n")
    return subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _app(root: Path, env: str) -> Config:
    (root / "resources" / "views").mkdir(parents=True)
    (root / "storage" / "framework" / "views").mkdir(parents=True)
    (root / ".env").write_text(env)
    return parse({"laravel": [{"name": "shop", "root": str(root)}], "collectors": {
        "views": {"enabled": False}, "fpm": {"enabled": False}, "opcache": {"enabled": False},
        "laravel_caches": {"enabled": False}}})


async def _redis_up(config: Config) -> tuple[float | None, Scheduler]:
    scheduler = Scheduler(build_collectors(config))
    await scheduler.collect_all()
    observation = scheduler.status("redis", "shop").observation
    assert observation is not None
    return observation.samples.value(REDIS_UP), scheduler


async def test_redis_username_from_the_env_logs_in_as_the_acl_user_when_the_default_user_is_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    server = _redis_server(tmp_path, "bind 127.0.0.1", f"port {port}", "user default off",
                           f"user app on >{ACL_PASSWORD} ~* &* +@all")
    try:
        wait_for(lambda: _pings(["-p", str(port), "--user", "app", "--pass", ACL_PASSWORD]), timeout=20,
                 message=f"redis-server on {port}")
        base = f"CACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PORT={port}\nREDIS_PASSWORD={ACL_PASSWORD}\n"
        with caplog.at_level(logging.DEBUG):
            up, scheduler = await _redis_up(_app(tmp_path / "acl", base + "REDIS_USERNAME=app\n"))
            try:
                assert up == 1
                shown = shown_to_people(scheduler, caplog.text, *scheduler.collectors)
                assert_nowhere((ACL_PASSWORD,), shown)
            finally:
                await scheduler.close()
        # Without the username the same password is tried on the default user, which is off.
        up, scheduler = await _redis_up(_app(tmp_path / "no-user", base))
        await scheduler.close()
        assert up == 0
    finally:
        stop_process(server)


async def test_redis_host_as_a_socket_path_with_port_0_is_a_unix_socket_target(tmp_path: Path) -> None:
    socket = tmp_path / "redis.sock"
    server = _redis_server(tmp_path, "port 0", f"unixsocket {socket}", "unixsocketperm 700")
    try:
        wait_for(lambda: _pings(["-s", str(socket)]), timeout=20, message=f"redis-server on {socket}")
        config = _app(tmp_path / "app", f"REDIS_HOST={socket}\nREDIS_PORT=0\nREDIS_DB=2\n")
        up, scheduler = await _redis_up(config)
        try:
            assert up == 1
            report = build_report(scheduler.statuses())
            assert report.healthy, report.as_text()
            assert f"ok   redis/shop: socket {socket}, database 2" in report.as_text()
        finally:
            await scheduler.close()
    finally:
        stop_process(server)


def _pings(args: list[str]) -> bool:
    out = subprocess.run(["redis-cli", *args, "--no-auth-warning", "PING"], capture_output=True, text=True,
                         timeout=5, check=False)
    return out.stdout.strip() == "PONG"


@requires_blade
async def test_compiled_views_under_laravel_storage_path_are_the_ones_watched(tmp_path: Path) -> None:
    root = tmp_path / "app"
    views = root / "resources" / "views"
    views.mkdir(parents=True)
    (views / "welcome.blade.php").write_text("<h1>{{ $title }}</h1>\n")
    runtime = root / "runtime" / "framework" / "views"
    runtime.mkdir(parents=True)
    (root / "storage" / "framework" / "views").mkdir(parents=True)  # the empty default must not be read
    compile_views(runtime, [views / "welcome.blade.php"])
    (root / ".env").write_text(f"LARAVEL_STORAGE_PATH={root / 'runtime'}\n")
    config = parse({"laravel": [{"name": "app", "root": str(root)}]})
    [views_collector] = [c for c in build_collectors(config, {"views": True}) if c.kind == "views"]
    observation = await views_collector.collect()
    assert observation.samples.value(VIEWS_COMPILED) == 1
    assert observation.samples.value(VIEWS_UNCOMPILED) == 0


@pytest.mark.parametrize(("env", "socket"), [
    ("DB_CONNECTION=pgsql\nDB_HOST=/var/run/postgresql\nDB_USERNAME=postgres\nDB_DATABASE=postgres\n",
     Path("/var/run/postgresql/.s.PGSQL.5432")),
    # DB_PORT=1 answers nothing: as in Laravel, the socket replaces host and port.
    ("DB_CONNECTION=mariadb\nDB_SOCKET=/run/mysqld/mysqld.sock\nDB_PORT=1\nDB_USERNAME=root\n"
     "DB_DATABASE=test\n",
     Path("/run/mysqld/mysqld.sock")),
])
async def test_a_database_socket_from_the_env_is_where_the_target_connects(
    tmp_path: Path, env: str, socket: Path,
) -> None:
    # The shared servers started by scripts/start-services listen on these sockets (trust and root's
    # unix_socket login), so no password is involved.
    if not _listening(socket):
        pytest.skip(f"no server socket at {socket} (scripts/start-services starts one)")
    config = _app(tmp_path / "app", env)
    scheduler = Scheduler(build_collectors(config))
    try:
        await scheduler.collect_all()
        observation = scheduler.status("sql", "shop").observation
        assert observation is not None
        assert observation.samples.value(DB_UP) == 1, build_report(scheduler.statuses()).as_text()
    finally:
        await scheduler.close()


def _listening(socket: Path) -> bool:
    return socket.is_socket()


def _laravel_version(root: Path, version: str) -> None:
    application = root / APPLICATION_PHP
    application.parent.mkdir(parents=True)
    application.write_text(f"<?php\nclass Application\n{{\n    const VERSION = '{version}';\n}}\n")


def _laravel_8_connects(config: dict[str, object]) -> bool:
    """Whether Laravel 8's own RedisManager (Debian's framework, phpredis) connects with `config`."""
    if shutil.which("php") is None or not Path("/usr/share/php/Illuminate/Redis/autoload.php").is_file():
        pytest.skip("php and php-laravel-framework are needed")
    done = subprocess.run(["php", str(Path(__file__).parents[1] / "support" / "laravel_redis.php"),
                           json.dumps(config)], capture_output=True, text=True, timeout=30, check=True)
    return "ping" in json.loads(done.stdout)


@pytest.mark.parametrize(("version", "env", "app_connects"), [
    # Laravel 8's config has no REDIS_USERNAME and its phpredis connector sends AUTH password alone.
    ("8.83.26", "REDIS_HOST=127.0.0.1\nREDIS_USERNAME=app\n", False),
    ("8.83.26", "REDIS_URL=redis://app:{pw}@127.0.0.1:{port}\n", False),
    ("9.52.16", "REDIS_HOST=127.0.0.1\nREDIS_USERNAME=app\n", True),
    # An empty user in the URL is set, and overrides REDIS_USERNAME: AUTH goes to the default user.
    ("12.0.0", "REDIS_URL=redis://:{pw}@127.0.0.1:{port}\nREDIS_USERNAME=app\n", False),
    ("12.0.0", "REDIS_URL=redis://app:{pw}@127.0.0.1:{port}\n", True),
])
async def test_the_redis_login_is_the_one_the_apps_laravel_version_sends(
    tmp_path: Path, version: str, env: str, app_connects: bool,
) -> None:
    port = free_port()
    server = _redis_server(tmp_path, "bind 127.0.0.1", f"port {port}", "user default on nopass ~* &* +@all",
                           f"user app on >{ACL_PASSWORD} ~* &* +@all")
    # `default` is on without a password, and Redis refuses AUTH <password> for it ("called without any
    # password configured"): only AUTH app <password> logs in. cachewarden must be down exactly when the
    # app cannot connect.
    try:
        wait_for(lambda: _pings(["-p", str(port)]), timeout=20, message=f"redis-server on {port}")
        text = env.format(pw=ACL_PASSWORD, port=port) + f"REDIS_PORT={port}\nREDIS_PASSWORD={ACL_PASSWORD}\n"
        root = tmp_path / "app"
        _app(root, text)
        _laravel_version(root, version)
        config = parse({"laravel": [{"name": "shop", "root": str(root)}], "collectors": {
            "views": {"enabled": False}, "fpm": {"enabled": False}, "opcache": {"enabled": False}}})
        if version.startswith("8."):  # the 8.x skeleton's connection, run by Laravel 8 itself
            values = config.laravel[0].env
            assert _laravel_8_connects({
                "url": values.get("REDIS_URL"), "host": values.get("REDIS_HOST", "127.0.0.1"),
                "password": values.get("REDIS_PASSWORD"), "port": values.get("REDIS_PORT", "6379"),
                "database": values.get("REDIS_DB", "0")}) is app_connects
        up, scheduler = await _redis_up(config)
        await scheduler.close()
        assert up == (1 if app_connects else 0)
    finally:
        stop_process(server)


def _pdo_connects(dsn: str) -> bool:
    """Whether PHP's PDO (as Laravel's MySqlConnector calls it) logs in as root with `dsn`."""
    if shutil.which("php") is None:
        pytest.skip("php is needed")
    code = ("try { new PDO($argv[1], 'root', ''); echo 'ok'; } catch (PDOException $e) { echo 'no'; }")
    done = subprocess.run(["php", "-r", code, dsn], capture_output=True, text=True, timeout=30, check=True)
    return done.stdout == "ok"


@pytest.mark.parametrize(("host", "app_connects"), [("localhost", True), ("127.0.0.1", False)])
async def test_db_host_localhost_reaches_the_socket_as_php_does_whatever_db_port_says(
    tmp_path: Path, host: str, app_connects: bool,
) -> None:
    socket = Path("/run/mysqld/mysqld.sock")
    if not _listening(socket):
        pytest.skip(f"no server socket at {socket} (scripts/start-services starts one)")
    port = free_port()  # nothing listens there
    # The DSN Laravel's MySqlConnector builds when DB_SOCKET is empty.
    assert _pdo_connects(f"mysql:host={host};port={port};dbname=test") is app_connects
    config = _app(tmp_path / "app", f"DB_CONNECTION=mysql\nDB_HOST={host}\nDB_PORT={port}\n"
                                    "DB_USERNAME=root\nDB_DATABASE=test\n")
    scheduler = Scheduler(build_collectors(config))
    try:
        await scheduler.collect_all()
        status = scheduler.status("sql", "shop")
        up = status.observation.samples.value(DB_UP) if status.observation else 0
        assert up == (1 if app_connects else 0), build_report(scheduler.statuses()).as_text()
    finally:
        await scheduler.close()


@pytest.mark.parametrize(("env", "kind", "server"), [
    # libpq reaches PostgreSQL's localhost over TCP, as phpredis does Redis's: no socket there.
    ("DB_CONNECTION=pgsql\nDB_HOST=localhost\nDB_USERNAME=postgres\nDB_DATABASE=postgres\n", "sql",
     ("127.0.0.1", 5432)),
    ("REDIS_HOST=localhost\n", "redis", ("127.0.0.1", 6379)),
])
async def test_localhost_is_tcp_for_postgresql_and_redis(
    tmp_path: Path, env: str, kind: str, server: tuple[str, int],
) -> None:
    import socket

    with socket.socket() as probe:
        if probe.connect_ex(server) != 0:
            pytest.skip(f"nothing listens on {server} (scripts/start-services starts it)")
    config = _app(tmp_path / "app", env)
    found = discover(config, views=False)
    [target] = found.databases if kind == "sql" else found.redis
    assert urlsplit(target.url).hostname == "localhost"
    assert not urlsplit(target.url).query  # no socket
    scheduler = Scheduler(build_collectors(config))
    try:
        await scheduler.collect_all()
        status = scheduler.status(kind, "shop")
        assert status.observation is not None, status.error
        assert status.observation.samples.value(DB_UP if kind == "sql" else REDIS_UP) == 1
    finally:
        await scheduler.close()
