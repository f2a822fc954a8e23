"""Targets derived from a Laravel app's .env as its Laravel version reads it, and every one that cannot be
built reported as a problem (check, status page, /metrics), never skipped in silence."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from exporter.app import SCHEDULER, create_app
from exporter.collectors import build_collectors
from exporter.collectors.discovery import CONFIG_PROBLEMS, DERIVED_TARGET_INFO, DiscoveryCollector
from exporter.config import Config, parse
from exporter.discovery import Outcome, discover, discovered_databases, discovered_redis
from exporter.laravel_paths import APPLICATION_PHP
from exporter.report import build_report
from exporter.scheduler import Scheduler
from exporter.status_page import render_status_page
from tests.support.disclosure import assert_nowhere, shown_to_people

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
ONLY_DATASTORES = {"views": {"enabled": False}, "fpm": {"enabled": False}, "opcache": {"enabled": False},
                   "laravel_caches": {"enabled": False}}


def laravel_root(root: Path, env: str, version: str | None = None) -> Path:
    (root / "resources" / "views").mkdir(parents=True)
    (root / "storage" / "framework" / "views").mkdir(parents=True)
    (root / ".env").write_text(env, encoding="utf-8")
    if version is not None:
        application = root / APPLICATION_PHP
        application.parent.mkdir(parents=True)
        application.write_text(f"<?php\nclass Application\n{{\n    const VERSION = '{version}';\n}}\n")
    return root


def app_config(tmp_path: Path, env: str, version: str | None = None, **sections: Any) -> Config:
    root = laravel_root(tmp_path / "shop", env, version)
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


def test_two_apps_on_one_redis_server_share_one_target_and_the_second_says_which(tmp_path: Path) -> None:
    roots = []
    for name, env in (("shop", "REDIS_HOST=10.0.0.5\nREDIS_DB=0\n"),
                      ("blog", "REDIS_HOST=10.0.0.5\nREDIS_DB=3\n"), ("api", "REDIS_HOST=10.0.0.6\n")):
        roots.append({"name": name, "root": str(laravel_root(tmp_path / name, env))})
    config = parse({"laravel": roots})
    found = discover(config, sql=False, views=False)
    assert [(t.name, t.url) for t in found.redis] == [
        ("shop", "redis://10.0.0.5:6379/0"), ("api", "redis://10.0.0.6:6379/0")]
    blog = next(d for d in found.derivations if d.app == "blog")
    assert (blog.outcome, blog.target) == (Outcome.WATCHED, "shop")
    watched = parse({"laravel": roots, "redis": [{"name": "main", "url": "redis://10.0.0.6:6379/2"}]})
    assert [t.name for t in discovered_redis(watched)] == ["shop"]


async def test_a_port_that_is_not_a_number_is_a_problem_in_check_and_metrics_not_a_silent_skip(
    tmp_path: Path,
) -> None:
    config = app_config(tmp_path, "DB_CONNECTION=pgsql\nDB_PORT=-1\nREDIS_HOST=r\nREDIS_PORT=70000\n",
                        collectors=ONLY_DATASTORES)
    collectors = build_collectors(config)
    assert [c.key for c in collectors] == [("discovery", "shop")]
    scheduler = Scheduler(collectors)
    [status] = await scheduler.collect_all()
    assert status.observation is not None
    samples = status.observation.samples
    assert samples.value(CONFIG_PROBLEMS, kind="sql") == 1
    assert samples.value(CONFIG_PROBLEMS, kind="redis") == 1
    assert samples.value(CONFIG_PROBLEMS, kind="dotenv") == 0
    report = build_report(scheduler.statuses())
    assert not report.healthy
    assert "FAIL sql target: no database target: DB_PORT='-1' is not a port number" in report.as_text()
    assert "FAIL redis target: no Redis target: REDIS_PORT='70000' is not a port number" in report.as_text()
    page = render_status_page(report, started_at=0)
    assert "1 problem(s)" not in page
    assert "2 problem(s) found" in page
    assert "no Redis target: REDIS_PORT=&#39;70000&#39; is not a port number" in page


async def test_an_unreadable_env_marks_every_derived_target_as_not_derivable_naming_file_and_line(
    tmp_path: Path,
) -> None:
    config = app_config(tmp_path, "APP_ENV=production\nAPP_NAME=My Shop\nDB_HOST=db\nREDIS_HOST=r\n")
    app = config.laravel[0]
    assert app.env == {}
    assert app.env_error is not None
    assert f"{app.root / '.env'}, line 2: " in app.env_error
    assert discovered_databases(config) == []
    [discovery] = [c for c in build_collectors(config) if isinstance(c, DiscoveryCollector)]
    observation = await discovery.collect()
    for kind in ("dotenv", "views", "redis", "sql"):
        assert observation.samples.value(CONFIG_PROBLEMS, kind=kind) == 1, kind
    assert all("line 2" in c.summary for c in observation.checks if not c.ok)
    assert len([c for c in observation.checks if not c.ok]) == 4


async def test_metrics_and_json_say_which_target_came_from_which_env_with_secrets_redacted(
    tmp_path: Path,
) -> None:
    config = app_config(tmp_path, LARAVEL_ENV, collectors=ONLY_DATASTORES)
    source = str(config.laravel[0].root / ".env")
    [discovery] = [c for c in build_collectors(config) if isinstance(c, DiscoveryCollector)]
    scheduler = Scheduler([discovery])
    [status] = await scheduler.collect_all()
    assert status.observation is not None
    values = status.observation.samples.values
    info = {(labels, v) for spec, labels, v in values if spec is DERIVED_TARGET_INFO}
    assert info == {(("shop", "redis", "shop", source), 1.0), (("shop", "sql", "shop", source), 1.0)}
    [entry] = build_report(scheduler.statuses()).as_dict()["targets"]
    derived = {d["collector"]: d for d in entry["derived"]}
    assert derived["redis"]["settings"]["password"] == "<redacted>"
    assert derived["redis"]["settings"]["host"] == "cache.internal"
    assert derived["sql"]["settings"]["password"] == "<redacted>"
    assert "REDIS_PASSWORD" in derived["redis"]["variables"]
    assert_nowhere(("p@ss:w/rd-31", "redis-pw-77"), shown_to_people(scheduler, "", discovery))


@pytest.mark.parametrize(("env", "url", "user_shown"), [
    ("REDIS_HOST=10.0.0.5\nREDIS_USERNAME=app\nREDIS_PASSWORD=pw\n", "redis://app@10.0.0.5:6379/0", True),
    # Laravel sends the username only with a password.
    ("REDIS_HOST=10.0.0.5\nREDIS_USERNAME=app\n", "redis://10.0.0.5:6379/0", False),
    ("REDIS_HOST=/run/redis/redis.sock\nREDIS_PORT=0\nREDIS_DB=3\n", "unix:///run/redis/redis.sock?db=3",
     False),
    ("REDIS_URL=rediss://app:pw@cache.example:6380/4\nREDIS_HOST=ignored\n",
     "rediss://app@cache.example:6380/4", True),
    ("REDIS_URL=tcp://cache.example:6390?database=7\n", "redis://cache.example:6390/7", False),
    ("REDIS_HOST=cache.example\nREDIS_SCHEME=tls\nREDIS_PASSWORD=pw\n", "rediss://cache.example:6379/0",
     False),
    ("REDIS_HOST=::1\nCACHE_STORE=redis\n", "redis://[::1]:6379/0", False),
    ("CACHE_DRIVER=redis\n", "redis://127.0.0.1:6379/0", False),
])
def test_redis_variables_as_laravel_reads_them(tmp_path: Path, env: str, url: str, user_shown: bool) -> None:
    found = discover(app_config(tmp_path, env), sql=False, views=False)
    [target] = found.redis
    assert target.url == url
    [how] = found.derivations
    assert how.outcome is Outcome.DERIVED, how.summary
    assert ("user app" in how.summary) is user_shown


async def test_every_secret_a_derived_url_carries_is_redacted_where_its_settings_are_shown(
        tmp_path: Path) -> None:
    env = ("DB_CONNECTION=pgsql\nDB_URL=pgsql://app:url-pw-1@db:5432/shop?sslpassword=ssl-pw-2&sslmode=require\n"
           "REDIS_URL=redis://cache:6379/1?password=query-pw-3&Token=tok-4\n")
    config = app_config(tmp_path, env, "11.0.0", collectors=ONLY_DATASTORES)
    [discovery] = [c for c in build_collectors(config) if isinstance(c, DiscoveryCollector)]
    scheduler = Scheduler([discovery])
    await scheduler.collect_all()
    [entry] = build_report(scheduler.statuses()).as_dict()["targets"]
    derived = {d["collector"]: d["settings"] for d in entry["derived"]}
    assert derived["sql"]["sslpassword"] == "<redacted>"
    assert derived["sql"]["sslmode"] == "require"  # not a secret: shown
    assert derived["redis"]["Token"] == "<redacted>"
    assert_nowhere(("url-pw-1", "ssl-pw-2", "query-pw-3", "tok-4"), shown_to_people(scheduler, "", discovery))


def test_a_redis_url_password_is_kept_out_of_the_url(tmp_path: Path) -> None:
    [target] = discovered_redis(app_config(tmp_path, "REDIS_URL=redis://app:s3cr%40t@cache:6379/1\n"))
    assert (target.url, target.password()) == ("redis://app@cache:6379/1", "s3cr@t")


@pytest.mark.parametrize(("env", "why"), [
    ("REDIS_HOST=/run/redis/redis.sock\n", "REDIS_PORT=6379: phpredis then looks the path up as a host name"),
    ("REDIS_HOST=/run/redis/redis.sock\nREDIS_PORT=0\nREDIS_CLIENT=predis\n", "which predis does not open"),
])
def test_a_socket_the_app_itself_cannot_open_is_watched_and_reported(
    tmp_path: Path, env: str, why: str,
) -> None:
    found = discover(app_config(tmp_path, env), sql=False, views=False)
    [target] = found.redis
    assert target.url == "unix:///run/redis/redis.sock?db=0"
    [how] = found.derivations
    assert how.outcome is Outcome.PROBLEM
    assert why in how.summary


@pytest.mark.parametrize(("env", "version", "url"), [
    ("DB_URL=mysql://app:pw@db.example:3310/shop\n", "11.9.0", "mysql+asyncmy://app@db.example:3310/shop"),
    ("DATABASE_URL=postgres://app:pw@pg.example/shop\n", "9.52.16", "postgresql+asyncpg://app@pg.example:5432/shop"),
    # Laravel 8-10 read DATABASE_URL only; 11 and 12 read DB_URL only.
    ("DB_URL=mysql://app@elsewhere/x\nDB_HOST=db\nDB_DATABASE=shop\n", "10.48.4", "mysql+asyncmy://forge@db:3306/shop"),
    ("DATABASE_URL=mysql://app@elsewhere/x\nDB_CONNECTION=mysql\nDB_HOST=db\nDB_DATABASE=shop\n", "12.0.1",
     "mysql+asyncmy://root@db:3306/shop"),
    ("DB_CONNECTION=mariadb\nDB_SOCKET=/run/mysqld/mysqld.sock\nDB_DATABASE=shop\nDB_USERNAME=app\n",
     "11.0.0",
     "mysql+asyncmy://app@127.0.0.1:3306/shop?unix_socket=/run/mysqld/mysqld.sock"),
    ("DB_CONNECTION=pgsql\nDB_HOST=/var/run/postgresql\nDB_DATABASE=shop\nDB_USERNAME=app\n", None,
     "postgresql+asyncpg://app@:5432/shop?host=/var/run/postgresql"),
    ("DB_CONNECTION=pgsql\nDB_HOST=pg\nDB_DATABASE=shop\nDB_SSLMODE=require\n", "12.3.0",
     "postgresql+asyncpg://root@pg:5432/shop?ssl=require"),
    ("DB_CONNECTION=pgsql\nDB_HOST=pg\nDB_DATABASE=shop\nDB_SSLMODE=require\n", "11.3.0",
     "postgresql+asyncpg://root@pg:5432/shop"),
    # Before 11 the default connection is mysql; from 11 it is sqlite (not watched).
    ("DB_HOST=db\nDB_DATABASE=shop\n", "8.83.26", "mysql+asyncmy://forge@db:3306/shop"),
])
def test_database_variables_as_each_laravel_version_reads_them(
    tmp_path: Path, env: str, version: str | None, url: str,
) -> None:
    [db] = discovered_databases(app_config(tmp_path, env, version))
    assert db.url == url


def test_sqlite_is_noted_and_an_unknown_connection_is_a_problem(tmp_path: Path) -> None:
    sqlite = discover(app_config(tmp_path / "a", "DB_DATABASE=/srv/db.sqlite\n", "11.0.0"), views=False)
    [how] = sqlite.derivations
    assert (how.outcome, sqlite.databases) == (Outcome.NOT_WATCHED, [])
    custom = discover(app_config(tmp_path / "b", "DB_CONNECTION=reporting\n"), views=False)
    [how] = custom.derivations
    assert how.outcome is Outcome.PROBLEM
    assert "DB_CONNECTION='reporting' is not a connection of Laravel's default" in how.summary


def test_an_env_without_database_or_redis_settings_yields_nothing(tmp_path: Path) -> None:
    found = discover(app_config(tmp_path, "APP_NAME=Shop\nCACHE_DRIVER=file\n"), views=False)
    assert (found.databases, found.redis, found.derivations) == ([], [], [])


def test_explicit_entries_linked_to_the_app_replace_discovery(tmp_path: Path) -> None:
    config = app_config(
        tmp_path, LARAVEL_ENV,
        databases=[{"name": "primary", "url": "mysql+asyncmy://exporter@10.0.0.9/shop", "laravel": "shop"}],
        redis=[{"name": "sessions", "url": "redis://10.0.0.8:6379/0", "laravel": "shop"}],
    )
    assert discover(config, views=False).derivations == []


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
    config = app_config(tmp_path, LARAVEL_ENV, collectors=ONLY_DATASTORES)
    keys = {c.key for c in build_collectors(config)}
    assert keys == {("sql", "shop"), ("redis", "shop"), ("discovery", "shop")}


def test_a_derived_url_that_is_not_a_valid_target_is_a_problem(tmp_path: Path) -> None:
    found = discover(app_config(tmp_path, "REDIS_HOST=127.0.0.1\nREDIS_DB=cache\n"), sql=False, views=False)
    assert found.redis == []
    [how] = found.derivations
    assert how.outcome is Outcome.PROBLEM
    assert how.summary == "no Redis target: REDIS_DB='cache' is not a database number"


async def test_metrics_expose_the_source_of_each_derived_target_and_the_problem_counts(
    tmp_path: Path, aiohttp_client: Any,
) -> None:
    config = app_config(tmp_path, "REDIS_HOST=/run/redis/redis.sock\nDB_CONNECTION=pgsql\nDB_PORT=x\n",
                        collectors=ONLY_DATASTORES)
    collectors = [c for c in build_collectors(config) if isinstance(c, DiscoveryCollector)]
    client = await aiohttp_client(create_app(config, collectors=collectors, run_collectors=False))
    await client.app[SCHEDULER].collect_all()
    text = await (await client.get("/metrics")).text()
    source = config.laravel[0].root / ".env"
    labels = f'app="shop",collector="redis",source="{source}",target="shop"'
    assert f"cachewarden_derived_target_info{{{labels}}} 1.0" in text
    assert 'cachewarden_target_config_problems{kind="redis",target="shop"} 1.0' in text
    assert 'cachewarden_target_config_problems{kind="sql",target="shop"} 1.0' in text
    assert 'cachewarden_target_config_problems{kind="dotenv",target="shop"} 0.0' in text


def test_an_unset_db_connection_with_an_unknown_laravel_version_is_a_problem_not_a_guess(
    tmp_path: Path,
) -> None:
    found = discover(app_config(tmp_path, "DB_HOST=db\nDB_DATABASE=shop\n"), redis=False, views=False)
    [how] = found.derivations
    assert (how.outcome, found.databases) == (Outcome.PROBLEM, [])
    assert "mysql up to Laravel 10 and sqlite from 11; set DB_CONNECTION" in how.summary


@pytest.mark.parametrize(("env", "from_env"), [("APP_NAME=x\n", False),
                                               ("LARAVEL_STORAGE_PATH=runtime\n", True)])
async def test_the_views_target_is_named_as_derived_only_when_the_env_chose_its_directory(
    tmp_path: Path, env: str, from_env: bool,
) -> None:
    root = laravel_root(tmp_path / "shop", env)
    (root / "runtime" / "framework" / "views").mkdir(parents=True)
    config = parse({"laravel": [{"name": "shop", "root": str(root)}]})
    [discovery] = [c for c in build_collectors(config) if isinstance(c, DiscoveryCollector)]
    observation = await discovery.collect()
    info = [labels for spec, labels, _ in observation.samples.values if spec is DERIVED_TARGET_INFO]
    assert info == ([("shop", "views", "shop", str(root / ".env"))] if from_env else [])
    [check] = observation.checks
    assert check.name == "views/shop"
    assert check.ok


async def test_a_secret_that_breaks_the_env_is_named_but_shown_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        config = app_config(tmp_path, "REDIS_HOST=r\nREDIS_PASSWORD=open sesame 42\n")
        scheduler = Scheduler(build_collectors(config))
        await scheduler.collect_all()
    text = build_report(scheduler.statuses()).as_text()
    assert "line 2: Failed to parse dotenv file. Encountered unexpected whitespace at [the value of " \
           "REDIS_PASSWORD, not shown]." in text
    shown = shown_to_people(scheduler, caplog.text, *scheduler.collectors)
    assert_nowhere(("open sesame 42", "sesame"), shown)


def test_db_host_localhost_is_the_socket_pdo_mysql_opens_not_tcp_to_the_port(tmp_path: Path) -> None:
    # PHP's PDO reaches MariaDB's socket for host=localhost;port=3307 while nothing listens on 3307.
    config = app_config(tmp_path, "DB_CONNECTION=mysql\nDB_HOST=localhost\nDB_PORT=3307\nDB_DATABASE=test\n",
                        "10.48.0")
    [db] = discovered_databases(config)
    assert db.url == "mysql+asyncmy://forge@localhost:3307/test?unix_socket=/run/mysqld/mysqld.sock"
    # Only `localhost` exactly: mysqlnd opens its built-in socket for any other spelling.
    other = app_config(tmp_path / "b", "DB_CONNECTION=mysql\nDB_HOST=LOCALHOST\n", "10.48.0")
    [db] = discovered_databases(other)
    assert db.url.endswith("?unix_socket=/tmp/mysql.sock")
    # DB_SOCKET wins, and PostgreSQL's localhost is TCP (libpq).
    socket = app_config(tmp_path / "c", "DB_CONNECTION=mysql\nDB_HOST=localhost\nDB_SOCKET=/s.sock\n",
                        "10.48.0")
    assert discovered_databases(socket)[0].url.endswith("?unix_socket=/s.sock")
    pg = app_config(tmp_path / "d", "DB_CONNECTION=pgsql\nDB_HOST=localhost\nDB_DATABASE=x\n", "10.48.0")
    assert discovered_databases(pg)[0].url == "postgresql+asyncpg://forge@localhost:5432/x"


def test_the_socket_for_localhost_is_pdo_mysql_default_socket_from_phps_ini(tmp_path: Path) -> None:
    from exporter.php.mysql_socket import MARIADB_SOCKET, default_socket

    etc = tmp_path / "php"
    (etc / "8.2" / "fpm" / "conf.d").mkdir(parents=True)
    (etc / "8.2" / "fpm" / "php.ini").write_text("[Pdo_mysql]\npdo_mysql.default_socket=\n")
    assert default_socket(etc)[0] == MARIADB_SOCKET  # empty keeps the compiled-in default
    conf = etc / "8.2" / "fpm" / "conf.d" / "90-mysql.ini"
    conf.write_text('pdo_mysql.default_socket = "/srv/my.sock"\n')
    assert default_socket(etc) == ("/srv/my.sock", f"pdo_mysql.default_socket in {conf}")


@pytest.mark.parametrize(("env", "version", "problem"), [
    ("DB_CONNECTION=mariadb\n", "10.48.0", "'mariadb' is not a connection"),
    ("DB_CONNECTION=MySQL\n", "10.48.0", "case-sensitive: 'mysql'"),
    ("DB_CONNECTION=mysql\nDATABASE_URL=MySQL://u@h/db\n", "10.48.0", "the driver 'MySQL'"),
    ("REDIS_HOST=h\nREDIS_CLIENT=PhpRedis\n", "10.48.0", "REDIS_CLIENT='PhpRedis'"),
])
def test_names_laravel_looks_up_case_sensitively_or_per_version_are_problems(
    tmp_path: Path, env: str, version: str, problem: str,
) -> None:
    found = discover(app_config(tmp_path, env, version), views=False)
    [how] = found.derivations
    assert how.outcome is Outcome.PROBLEM
    assert problem in how.summary
    assert (found.databases, found.redis) == ([], [])


def test_mariadb_is_a_connection_from_laravel_11(tmp_path: Path) -> None:
    config = app_config(tmp_path, "DB_CONNECTION=mariadb\nDB_HOST=db\nDB_DATABASE=x\n", "11.0.0")
    assert discovered_databases(config)[0].url == "mysql+asyncmy://root@db:3306/x"


@pytest.mark.parametrize(("version", "url"), [
    ("8.83.26", "redis://127.0.0.1:6391/0"),  # Laravel 8 sends AUTH with the password alone
    ("9.52.0", "redis://mon@127.0.0.1:6391/0"),
])
def test_redis_username_is_sent_from_laravel_9(tmp_path: Path, version: str, url: str) -> None:
    config = app_config(tmp_path, "REDIS_HOST=127.0.0.1\nREDIS_PORT=6391\nREDIS_USERNAME=mon\n"
                                  "REDIS_PASSWORD=monpass\n", version)
    assert discovered_redis(config)[0].url == url


def test_an_empty_user_in_redis_url_overrides_redis_username_as_laravel_does(tmp_path: Path) -> None:
    config = app_config(tmp_path, "REDIS_URL=redis://:monpass@127.0.0.1:6391\nREDIS_USERNAME=mon\n", "12.0.0")
    [redis] = discovered_redis(config)
    assert (redis.url, redis.password()) == ("redis://127.0.0.1:6391/0", "monpass")


def test_redis_url_query_and_bracketed_ipv6_host(tmp_path: Path) -> None:
    config = app_config(tmp_path, "REDIS_URL=redis://[::1]:6380?database=2\n", "12.0.0")
    assert discovered_redis(config)[0].url == "redis://[::1]:6380/2"


def test_a_tls_scheme_written_in_redis_host_keeps_redis_port(tmp_path: Path) -> None:
    config = app_config(tmp_path, "REDIS_HOST=tls://127.0.0.1\nREDIS_PORT=6379\n", "12.0.0")
    [how] = [d for d in discover(config, views=False).derivations]
    assert how.outcome is Outcome.DERIVED, how.summary
    assert discovered_redis(config)[0].url == "rediss://127.0.0.1:6379/0"


async def test_an_edited_env_is_read_again_its_errors_and_new_targets_reported_while_running(
    tmp_path: Path,
) -> None:
    config = app_config(tmp_path, LARAVEL_ENV, "10.48.0")
    dotenv = config.laravel[0].root / ".env"
    [discovery] = [c for c in build_collectors(config) if isinstance(c, DiscoveryCollector)]

    async def problems() -> dict[str, float | None]:
        observation = await discovery.collect()
        return {kind: observation.samples.value(CONFIG_PROBLEMS, kind=kind) for kind in ("dotenv", "sql")}

    assert await problems() == {"dotenv": 0, "sql": 0}
    # An unquoted space stops Laravel from booting: reported at the next collection, not at a restart.
    dotenv.write_text(LARAVEL_ENV.replace("APP_NAME=Shop", "APP_NAME=My Shop"), encoding="utf-8")
    assert await problems() == {"dotenv": 1, "sql": 1}
    observation = await discovery.collect()
    assert any(c.name == ".env" and "line 1" in c.summary for c in observation.checks if not c.ok)
    # Rewritten as it was (a new inode, same values): nothing changed for the app.
    dotenv.unlink()
    dotenv.write_text(LARAVEL_ENV, encoding="utf-8")
    assert await problems() == {"dotenv": 0, "sql": 0}
    # Another database server, and a connection Laravel 10 does not define.
    dotenv.write_text(LARAVEL_ENV.replace("DB_HOST=db.internal", "DB_HOST=db2.internal"), encoding="utf-8")
    assert await problems() == {"dotenv": 1, "sql": 0}
    [changed] = [c for c in (await discovery.collect()).checks if c.name == ".env changed"]
    assert changed.summary.endswith("other targets (sql): restart cachewarden to watch the new targets")
    dotenv.write_text(LARAVEL_ENV.replace("DB_CONNECTION=mysql", "DB_CONNECTION=mariadb"), encoding="utf-8")
    assert await problems() == {"dotenv": 1, "sql": 1}
    # A new password only is a new target too, and never shown.
    dotenv.write_text(LARAVEL_ENV.replace("redis-pw-77", "redis-pw-78"), encoding="utf-8")
    observation = await discovery.collect()
    [changed] = [c for c in observation.checks if c.name == ".env changed"]
    assert "(credentials)" in changed.summary
    assert "redis-pw-78" not in repr(observation)


@pytest.mark.parametrize(("env", "url"), [
    # RedisManager makes a driver the scheme when it lowercases to tcp or tls; aliases are exact.
    ("REDIS_URL=Redis://h:6380\n", "redis://h:6380/0"),
    ("REDIS_URL=REDISS://h:6380\n", "redis://h:6380/0"),  # not aliased, not tls: plain TCP
    ("REDIS_URL=TLS://h:6380\n", "rediss://h:6380/0"),
    ("REDIS_HOST=h\nREDIS_SCHEME=tls\n", "rediss://h:6379/0"),
    ("REDIS_HOST=ssl://h\n", "rediss://h:6379/0"),
])
def test_the_redis_scheme_is_the_one_laravel_hands_phpredis(tmp_path: Path, env: str, url: str) -> None:
    assert discovered_redis(app_config(tmp_path, env, "12.0.0"))[0].url == url


@pytest.mark.parametrize("env", [
    "REDIS_HOST=h\nREDIS_SCHEME=TLS\n",  # PHP: Unable to find the socket transport "TLS"
    "REDIS_HOST=TLS://h\n",
    "REDIS_HOST=tls://h\nREDIS_CLIENT=predis\n",  # predis reads it as a host name
])
def test_a_redis_scheme_the_client_does_not_know_is_a_problem(tmp_path: Path, env: str) -> None:
    found = discover(app_config(tmp_path, env, "12.0.0"), views=False)
    [how] = found.derivations
    assert how.outcome is Outcome.PROBLEM
    assert found.redis == []
