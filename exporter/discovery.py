"""Database and Redis targets derived from a Laravel app's `.env`: pointing cachewarden at a root is enough.

The variables are those Laravel's default `config/database.php` and `config/cache.php` read, per major
version (docs/compatibility.md lists them and how each is tested):
- database: DB_CONNECTION (default `mysql` up to 10, `sqlite` from 11; `mariadb` exists from 11), the
  connection's URL (DATABASE_URL up to 10, DB_URL from 11; its parts override the single variables, as
  Laravel's ConfigurationUrlParser does), DB_HOST, DB_PORT, DB_DATABASE, DB_USERNAME, DB_PASSWORD, DB_SOCKET
  (MySQL/MariaDB), DB_SSLMODE (PostgreSQL, 12; `prefer` before);
- Redis: REDIS_URL (overrides, as above), REDIS_HOST (a path is a unix socket, which phpredis opens
  only with REDIS_PORT=0), REDIS_PORT, REDIS_USERNAME (an ACL user, sent only with a password, from 9),
  REDIS_PASSWORD, REDIS_DB, REDIS_CLIENT, and REDIS_SCHEME=tls that apps add for TLS.
The linking rule, per app and per kind (database, Redis):
- an explicit `databases` (or `redis`) entry with `laravel: APP` replaces discovery for that app and kind;
- an explicit entry whose name equals a derived name wins over the derived target;
- otherwise the app's `.env` yields a target named `APP`.
Redis is one target per server: every value INFO gives is server-wide, so a second app on the same
server is listed as watched by the first app's target rather than exported twice.
A database is implied when the `.env` names one (DB_CONNECTION, DB_URL/DATABASE_URL, DB_HOST or
DB_DATABASE), Redis when REDIS_URL or REDIS_HOST is set or a cache, session, queue or broadcast driver
is `redis`. An implied target that cannot be built (an unreadable `.env`, a port that is not a number,
a connection Laravel's default config does not define) is a problem, reported by `check`, the status
page and `cachewarden_target_config_problems`, never a silent skip. SQLite and SQL Server have no
collector: noted, not a problem.
Names Laravel looks up are matched as it matches them, case-sensitively (DB_CONNECTION, a URL's driver,
REDIS_CLIENT). Hosts are reached as PHP reaches them: MySQL's `localhost` is the socket pdo_mysql opens
(exporter.php.mysql_socket), a `tls://` written in REDIS_HOST is phpredis's TLS. URLs are read by a
port of Laravel's ConfigurationUrlParser (exporter.laravel_url).
Passwords stay inside the target objects, never in URLs, logs, reports or repr().
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from pydantic import ValidationError

from exporter import laravel_url
from exporter.config import Config, DatabaseTarget, LaravelTarget, RedisTarget
from exporter.laravel_paths import FrameworkVersion
from exporter.php.mysql_socket import localhost_socket
from exporter.url_secrets import is_secret_parameter

log = logging.getLogger(__name__)

T = TypeVar("T", DatabaseTarget, RedisTarget)

REDACTED = "<redacted>"
# The connections of the default config/database.php (names are looked up case-sensitively), and the
# drivers Laravel's ConnectionFactory knows (also exact): `mariadb` is both from Laravel 11 on.
_CONNECTIONS = ("mysql", "pgsql", "sqlite", "sqlsrv")
_MARIADB_SINCE = 11
_SCHEMES = {"mysql": "mysql+asyncmy", "mariadb": "mysql+asyncmy", "pgsql": "postgresql+asyncpg"}
_NOT_WATCHED = {"sqlite", "sqlsrv"}
_DEFAULT_PORTS = {"mysql+asyncmy": 3306, "postgresql+asyncpg": 5432}
_REDIS_DRIVER_KEYS = ("CACHE_DRIVER", "CACHE_STORE", "SESSION_DRIVER", "QUEUE_CONNECTION", "BROADCAST_DRIVER",
                      "BROADCAST_CONNECTION")
_PG_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


class Outcome(enum.Enum):
    DERIVED = "derived"  # a target was built from the .env
    WATCHED = "watched"  # implied, and already watched by another target
    NOT_WATCHED = "not watched"  # implied, of a kind cachewarden has no collector for
    PROBLEM = "problem"  # implied, and cannot be built (or the app cannot use it as configured)


@dataclass(frozen=True, slots=True)
class Derivation:
    """What one app's `.env` says about one kind of target, and what cachewarden made of it."""

    app: str
    collector: str  # "redis", "sql" or "views"
    outcome: Outcome
    source: str  # the .env file
    summary: str
    target: str | None = None  # the target watching it
    variables: tuple[str, ...] = ()  # the variables set in the .env that decided it
    settings: dict[str, Any] = field(default_factory=dict)  # as understood, secrets redacted

    def as_dict(self) -> dict[str, Any]:
        return {"app": self.app, "collector": self.collector, "outcome": self.outcome.value,
                "target": self.target, "source": self.source, "summary": self.summary,
                "variables": list(self.variables), "settings": self.settings}


@dataclass(slots=True)
class Discovery:
    redis: list[RedisTarget] = field(default_factory=list)
    databases: list[DatabaseTarget] = field(default_factory=list)
    derivations: list[Derivation] = field(default_factory=list)


class _Unbuildable(ValueError):
    """An implied target that cannot be built; the message names the variable and its value."""


class _Env:
    """The app's .env values as Laravel's env() reads them, remembering which ones were read."""

    def __init__(self, app: LaravelTarget) -> None:
        self.values = app.env
        self.read: list[str] = []

    def get(self, key: str) -> str | None:
        """The value, or None when unset or empty (no variable read here means anything when empty)."""
        value = self.values.get(key) or None
        if value is not None and key not in self.read:
            self.read.append(key)
        return value


def _version(app: LaravelTarget) -> FrameworkVersion | None:
    if app.framework_version is None:
        return None
    major, minor, patch = (int(p) for p in app.framework_version.split("."))
    return FrameworkVersion(major, minor, patch)


def _port(key: str, value: str | int, *, allow_zero: bool = False) -> int:
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        port = int(text)
        if 0 < port < 65536 or (allow_zero and port in (0, -1)):
            return port
    raise _Unbuildable(f"{key}={text!r} is not a port number from 1 to 65535")


def _url_parts(key: str, url: str) -> tuple[str | None, dict[str, Any]]:
    """Laravel's ConfigurationUrlParser: the driver (aliased, case kept) and the options a URL sets,
    as PHP later reads them (strings; a `null` part unsets)."""
    try:
        parsed = laravel_url.parse(url)
        driver = parsed.pop("driver", None)
        options = {k: laravel_url.php_string(v) for k, v in parsed.items()}
        return (None if driver is None else str(driver)), options
    except laravel_url.UrlError as exc:
        raise _Unbuildable(f"{key} is not a URL cachewarden reads as Laravel does: {exc}") from None


def _laravel(version: FrameworkVersion | None) -> str:
    return f"Laravel {version}" if version else "version unknown: the newest assumed"


def _describe(settings: dict[str, Any]) -> dict[str, Any]:
    # A URL's query can carry more secrets than `password` (sslpassword, token, …): one rule decides.
    return {k: (REDACTED if is_secret_parameter(k) and v else v)
            for k, v in settings.items() if v is not None}


def derive_database(app: LaravelTarget) -> tuple[DatabaseTarget | None, Derivation] | None:
    """The database target the app's `.env` implies, with its derivation; None when it implies none."""
    env, version = _Env(app), _version(app)
    source = str(app.root / ".env")
    url_keys = ("DB_URL",) if version and version.at_least(11) else (
        ("DATABASE_URL",) if version else ("DB_URL", "DATABASE_URL"))
    url_key = next((k for k in url_keys if env.get(k)), url_keys[0])
    if not any(env.get(k) for k in ("DB_CONNECTION", url_key, "DB_HOST", "DB_DATABASE")):
        return None
    default_connection = "sqlite" if version is None or version.at_least(11) else "mysql"
    connection = env.get("DB_CONNECTION") or default_connection
    has_mariadb = version is None or version.at_least(_MARIADB_SINCE)
    known = (*_CONNECTIONS, "mariadb") if has_mariadb else _CONNECTIONS
    settings: dict[str, Any] = {"connection": connection}
    if version is None and not env.get("DB_CONNECTION"):
        return None, Derivation(
            app.name, "sql", Outcome.PROBLEM, source,
            "no database target: DB_CONNECTION is unset and the app's Laravel version unknown (no "
            "vendor/laravel/framework): the default connection is mysql up to Laravel 10 and sqlite from "
            "11; set DB_CONNECTION", None, tuple(env.read), {})

    def result(outcome: Outcome, summary: str, target: DatabaseTarget | None = None
               ) -> tuple[DatabaseTarget | None, Derivation]:
        return target, Derivation(app.name, "sql", outcome, source, summary,
                                  target.name if target else None, tuple(env.read), _describe(settings))

    try:
        options: dict[str, Any] = {
            "host": env.get("DB_HOST") or "127.0.0.1", "port": env.get("DB_PORT"),
            "database": env.get("DB_DATABASE"), "username": env.get("DB_USERNAME"),
            "password": env.get("DB_PASSWORD"),
        }
        driver = connection
        if connection in ("mysql", "mariadb"):
            options["unix_socket"] = env.get("DB_SOCKET")
        if connection == "pgsql":
            options["sslmode"] = (env.get("DB_SSLMODE") if version is None or version.at_least(12)
                                  else None) or "prefer"
        if connection not in known:
            close = next((k for k in known if k == connection.lower()), None)
            hint = (f" (connection names are case-sensitive: {close!r})" if close else
                    " (mariadb is a connection from Laravel 11 on)" if connection == "mariadb" else "")
            raise _Unbuildable(f"DB_CONNECTION={connection!r} is not a connection of Laravel's default "
                               f"config/database.php ({_laravel(version)}){hint}, so the app cannot connect; "
                               f"add a databases entry with laravel: {app.name} if the app defines it")
        if url := env.get(url_key):
            scheme, from_url = _url_parts(url_key, url)
            driver = scheme or connection
            options.update(from_url)
            if driver not in known:
                raise _Unbuildable(f"{url_key} has the driver {driver!r}, which {_laravel(version)} does not "
                                   "support (drivers are case-sensitive)")
        settings.update(driver=driver, **{k: v for k, v in options.items() if k != "password"},
                        password=options.get("password"))
        if driver in _NOT_WATCHED:
            return result(Outcome.NOT_WATCHED, f"{driver}: no collector for it (MariaDB/MySQL and "
                                               "PostgreSQL are watched)")
        scheme = _SCHEMES[driver]
        if connection in ("mysql", "mariadb") and env.get("MYSQL_ATTR_SSL_CA"):
            raise _Unbuildable("MYSQL_ATTR_SSL_CA is set and cachewarden derives no TLS settings for MySQL; "
                               f"add a databases entry with laravel: {app.name}")
        port = _port("DB_PORT", options["port"]) if options.get("port") else _DEFAULT_PORTS[scheme]
        settings["port"] = port
        host = str(options["host"])
        query: list[str] = []
        if scheme == "mysql+asyncmy" and not options.get("unix_socket") and (
                found := localhost_socket(host)):
            # Laravel's DSN is host=localhost;port=…, and pdo_mysql then opens a socket, not TCP.
            options["unix_socket"], settings["socket_from"] = found
            settings["unix_socket"] = found[0]
        if scheme == "mysql+asyncmy" and options.get("unix_socket"):
            query.append(f"unix_socket={quote(str(options['unix_socket']), safe='/')}")
        if scheme == "postgresql+asyncpg":
            sslmode = str(options.get("sslmode") or "prefer")
            if sslmode not in _PG_SSLMODES:
                raise _Unbuildable(f"sslmode {sslmode!r} is not one of {sorted(_PG_SSLMODES)}")
            if sslmode != "prefer":  # asyncpg's default is libpq's: prefer
                query.append(f"ssl={sslmode}")
            if host.startswith("/"):  # a socket directory
                query.append(f"host={quote(host, safe='/')}")
                host = ""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        user = quote(str(options.get("username") or ("root" if version is None or version.at_least(11)
                                                      else "forge")), safe="")
        database = quote(str(options.get("database") or ""), safe="")
        url = f"{scheme}://{user}@{host}:{port}/{database}" + (f"?{'&'.join(query)}" if query else "")
        target = _build(DatabaseTarget, app, url)
        password = options.get("password")
        target._discovered_password = str(password) if password else None
    except _Unbuildable as exc:
        return result(Outcome.PROBLEM, f"no database target: {exc}")
    where = f"socket {options['unix_socket']}" if options.get("unix_socket") else f"{host}:{port}"
    if "socket_from" in settings:
        where += f" ({settings['socket_from']}: PHP opens it for host {options['host']}, not port {port})"
    return result(Outcome.DERIVED, f"{driver} at {where}, database {options.get('database') or '(none)'}, "
                                   f"user {unquote(user)}", target)


def derive_redis(app: LaravelTarget) -> tuple[RedisTarget | None, Derivation] | None:
    """The Redis target the app's `.env` implies, with its derivation; None when it implies none."""
    env, version = _Env(app), _version(app)
    source = str(app.root / ".env")
    uses_redis = [k for k in _REDIS_DRIVER_KEYS if (env.get(k) or "").lower() == "redis"]
    if not (env.get("REDIS_URL") or env.get("REDIS_HOST") or uses_redis):
        return None
    client = env.get("REDIS_CLIENT") or "phpredis"
    # Laravel 8's config has no REDIS_USERNAME, and its phpredis connector sends AUTH with the password
    # alone whatever the config says; from 9 both clients send AUTH user password.
    with_username = version is None or version.at_least(9)
    options: dict[str, Any] = {
        "host": env.get("REDIS_HOST") or "127.0.0.1", "port": env.get("REDIS_PORT") or "6379",
        "username": env.get("REDIS_USERNAME") if with_username else None,
        "password": env.get("REDIS_PASSWORD"),
        "database": env.get("REDIS_DB") or "0", "scheme": env.get("REDIS_SCHEME"),
    }
    settings: dict[str, Any] = {"client": client, "cache_database": env.get("REDIS_CACHE_DB") or "1"}
    problems: list[str] = []

    def result(outcome: Outcome, summary: str, target: RedisTarget | None = None
               ) -> tuple[RedisTarget | None, Derivation]:
        shown = {**settings, **{k: v for k, v in options.items() if k != "password"},
                 "password": options.get("password")}
        return target, Derivation(app.name, "redis", outcome, source, summary,
                                  target.name if target else None, tuple(env.read), _describe(shown))

    try:
        if client not in ("phpredis", "predis"):
            raise _Unbuildable(f"REDIS_CLIENT={client!r} is not phpredis or predis (Laravel reads it "
                               "case-sensitively), so the app has no Redis connector")
        if url := env.get("REDIS_URL"):
            driver, from_url = _url_parts("REDIS_URL", url)
            options.update(from_url)
            # RedisManager: a driver that lowercases to tcp or tls becomes the scheme; any other leaves
            # the scheme as the config has it (redis:// is aliased to tcp, exactly).
            if driver is not None and driver.lower() in ("tcp", "tls"):
                options["scheme"] = driver.lower()
            if not with_username and client == "phpredis":
                options["username"] = None
        host = str(options["host"])
        transport = options.get("scheme")
        # Both clients take the scheme exactly as written (PHP's stream transports and predis's
        # schemes are case-sensitive: `TLS://` is unknown). phpredis also reads one written in the host
        # (`tls://h`), which is where Laravel's formatHost() puts REDIS_SCHEME; the port stays REDIS_PORT.
        if client == "phpredis":
            full = f"{transport}://{host}" if transport else host
            if m := re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", full, re.DOTALL):
                transport, host = m.group(1), m.group(2)
        elif re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", host):
            raise _Unbuildable(f"REDIS_HOST={host!r} carries a scheme, which predis reads as part of the "
                               "host name, so the app cannot reach Redis (set REDIS_SCHEME)")
        if transport is not None and transport not in ("tcp", "tls", "ssl", "unix"):
            raise _Unbuildable(f"the Redis scheme {transport!r} is not tcp, tls, ssl or unix as "
                               f"{client} spells them (case-sensitive), so the app cannot reach Redis")
        scheme = {"ssl": "tls", None: "tcp"}.get(transport, transport)
        options["host"], options["scheme"] = host, transport
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        database = str(options["database"])
        if not database.isdigit():
            raise _Unbuildable(f"REDIS_DB={database!r} is not a database number")
        username = options.get("username")
        password = options.get("password")
        user = f"{quote(str(username), safe='')}@" if username and password else ""
        if host.startswith("/") or scheme == "unix":
            port = options["port"] = _port("REDIS_PORT", options["port"], allow_zero=True)
            if client == "phpredis" and port > 0:
                problems.append(f"REDIS_HOST is a socket path but REDIS_PORT={port}: phpredis then looks "
                                "the path up as a host name and the app cannot reach Redis "
                                "(set REDIS_PORT=0)")
            elif client == "predis":
                problems.append("REDIS_HOST is a socket path, which predis does not open from Laravel's "
                                "default config (it needs 'scheme' => 'unix' and 'path')")
            url = f"unix://{user}{quote(host, safe='/')}?db={database}"
            where = f"socket {host}"
        elif scheme in ("tcp", "tls"):
            port = options["port"] = _port("REDIS_PORT", options["port"])
            shown_host = f"[{host}]" if ":" in host else host
            url = f"{'rediss' if scheme == 'tls' else 'redis'}://{user}{shown_host}:{port}/{database}"
            where = f"{shown_host}:{port}" + (" over TLS" if scheme == "tls" else "")
        else:
            raise _Unbuildable(f"REDIS_SCHEME={scheme!r} is not tcp, tls or unix")
        target = _build(RedisTarget, app, url)
        target._discovered_password = str(password) if password else None
    except _Unbuildable as exc:
        return result(Outcome.PROBLEM, f"no Redis target: {exc}")
    who = f", user {username}" if user else ""
    summary = f"{where}, database {database}{who}"
    if problems:
        return result(Outcome.PROBLEM, f"{summary} (watched; but {'; '.join(problems)})", target)
    return result(Outcome.DERIVED, summary, target)


def _build(cls: type[T], app: LaravelTarget, url: str) -> T:
    try:
        return cls(name=app.name, url=url, laravel=app.name)
    except ValidationError as exc:
        errors = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise _Unbuildable(errors) from None


def _views(app: LaravelTarget) -> Derivation:
    source = str(app.root / ".env")
    origin = app.derived_from.get("compiled_path", "compiled_path in cachewarden's configuration")
    settings = {"views_path": str(app.views_dir), "compiled_path": str(app.compiled_dir)}
    if app.framework_version:
        settings["laravel"] = app.framework_version
    if app.env_error and "compiled_path" in app.derived_from:
        return Derivation(app.name, "views", Outcome.PROBLEM, source,
                          f"compiled views watched in {app.compiled_dir}, but {app.env_error}",
                          app.name, (), settings)
    read = tuple(k for k in ("VIEW_COMPILED_PATH", "LARAVEL_STORAGE_PATH") if origin.startswith(k))
    return Derivation(app.name, "views", Outcome.DERIVED, source,
                      f"compiled views in {app.compiled_dir} ({origin})", app.name, read, settings)


def discover(config: Config, *, redis: bool = True, sql: bool = True, views: bool = True) -> Discovery:
    """Every target the Laravel apps' `.env` files imply for the enabled kinds, and what became of each."""
    found = Discovery()
    linked_db = {t.laravel for t in config.databases}
    db_names = {t.name for t in config.databases}
    linked_redis = {t.laravel for t in config.redis}
    redis_names = {t.name for t in config.redis}
    servers = {_server(t.url): t.name for t in config.redis}
    for app in config.laravel:
        if views:
            found.derivations.append(_views(app))
        source = str(app.root / ".env")
        if app.env_error:
            for kind, on, linked in (("sql", sql, linked_db), ("redis", redis, linked_redis)):
                if on and app.name not in linked:
                    found.derivations.append(Derivation(
                        app.name, kind, Outcome.PROBLEM, source,
                        f"not derivable: {app.env_error}"))
            continue
        if sql and app.name not in linked_db and (got := derive_database(app)) is not None:
            db, how = got
            if db is not None and db.name in db_names:
                how = _replace(how, Outcome.WATCHED, db.name,
                               f"the databases entry named {db.name!r} replaces it")
            elif db is not None:
                found.databases.append(db)
            found.derivations.append(how)
        if redis and app.name not in linked_redis and (got_r := derive_redis(app)) is not None:
            target, how = got_r
            if target is not None and target.name in redis_names:
                how = _replace(how, Outcome.WATCHED, target.name,
                               f"the redis entry named {target.name!r} replaces it")
            elif target is not None and (server := _server(target.url)) in servers:
                how = _replace(how, Outcome.WATCHED, servers[server],
                               f"{how.summary}: the server is watched as redis/{servers[server]}")
            elif target is not None:
                servers[_server(target.url)] = target.name
                redis_names.add(target.name)
                found.redis.append(target)
            found.derivations.append(how)
    for how in found.derivations:
        if how.outcome is Outcome.PROBLEM:
            log.warning("laravel/%s: %s target: %s", how.app, how.collector, how.summary)
    return found


def _replace(how: Derivation, outcome: Outcome, target: str, summary: str) -> Derivation:
    keep = outcome if how.outcome is not Outcome.PROBLEM else how.outcome
    return Derivation(how.app, how.collector, keep, how.source, summary if keep is outcome else how.summary,
                      target, how.variables, how.settings)


def discovered_databases(config: Config) -> list[DatabaseTarget]:
    """Targets for every Laravel app not already covered by an explicit `databases` entry."""
    return discover(config, redis=False, views=False).databases


def discovered_redis(config: Config) -> list[RedisTarget]:
    """One target per Redis server not already watched, whichever app's `.env` names it first."""
    return discover(config, sql=False, views=False).redis


def _server(url: str) -> str:
    """host:port of a Redis URL (the socket path of a unix:// one)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
