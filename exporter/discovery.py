"""Database and Redis targets derived from a Laravel app's `.env`: pointing cachewarden at a root is enough.

The linking rule, per app and per kind (database, Redis):
- an explicit `databases` (or `redis`) entry with `laravel: APP` replaces discovery for that app and kind;
- an explicit entry whose name equals a derived name wins over the derived target;
- otherwise the app's `.env` yields `APP` (database: DB_*; Redis: REDIS_HOST, REDIS_PORT, REDIS_DB).
Redis is one target per server (host:port): every value INFO gives is server-wide and the keys are
already counted per logical database, so a second target on the same server (the cache database, or
another app sharing it) would only export the same numbers twice.
A database is derived only when the `.env` names one (DB_CONNECTION, DB_HOST or DB_DATABASE), Redis only
when REDIS_HOST is set or a cache, session or queue driver is `redis`. SQLite and SQL Server apps get
no database target. A value that cannot make a target (a port that is not a number) skips that
target with a warning: the `.env` is the app's, and the exporter still starts.
Passwords stay inside the target objects, never in URLs, logs or repr().
"""

from __future__ import annotations

import logging
from typing import TypeVar
from urllib.parse import quote, urlsplit

from pydantic import ValidationError

from exporter.config import Config, DatabaseTarget, LaravelTarget, RedisTarget

log = logging.getLogger(__name__)

T = TypeVar("T", DatabaseTarget, RedisTarget)

_SCHEMES = {"mysql": "mysql+asyncmy", "mariadb": "mysql+asyncmy", "pgsql": "postgresql+asyncpg"}
_DEFAULT_PORTS = {"mysql+asyncmy": "3306", "postgresql+asyncpg": "5432"}
_REDIS_DRIVER_KEYS = ("CACHE_DRIVER", "CACHE_STORE", "SESSION_DRIVER", "QUEUE_CONNECTION")


def _value(env: dict[str, str], key: str) -> str | None:
    """A variable as Laravel's env() reads it: `null`, `(null)` and empty mean unset."""
    value = env.get(key, "").strip()
    return None if value.lower() in ("", "null", "(null)") else value


def database_for(app: LaravelTarget) -> DatabaseTarget | None:
    env = app.env
    if not any(_value(env, k) for k in ("DB_CONNECTION", "DB_HOST", "DB_DATABASE")):
        return None
    connection = (_value(env, "DB_CONNECTION") or "mysql").lower()
    scheme = _SCHEMES.get(connection)
    if scheme is None:
        log.info("laravel/%s: DB_CONNECTION=%s is not watched (MariaDB/MySQL and PostgreSQL are)",
                 app.name, connection)
        return None
    user = quote(_value(env, "DB_USERNAME") or "root", safe="")
    host = _value(env, "DB_HOST") or "127.0.0.1"
    port = _value(env, "DB_PORT") or _DEFAULT_PORTS[scheme]
    if not _valid_port(app, "DB_PORT", port, "database"):
        return None
    database = quote(_value(env, "DB_DATABASE") or "", safe="")
    url = f"{scheme}://{user}@{host}:{port}/{database}"
    if scheme == "mysql+asyncmy" and (socket := _value(env, "DB_SOCKET")):
        url += f"?unix_socket={quote(socket, safe='/')}"
    target = _build(DatabaseTarget, app, app.name, url)
    if target is not None:
        target._discovered_password = _value(env, "DB_PASSWORD")
    return target


def redis_for(app: LaravelTarget) -> RedisTarget | None:
    env = app.env
    uses_redis = any((_value(env, k) or "").lower() == "redis" for k in _REDIS_DRIVER_KEYS)
    if not (_value(env, "REDIS_HOST") or uses_redis):
        return None
    host = _value(env, "REDIS_HOST") or "127.0.0.1"
    port = _value(env, "REDIS_PORT") or "6379"
    if not _valid_port(app, "REDIS_PORT", port, "Redis"):
        return None
    db = _value(env, "REDIS_DB") or "0"
    target = _build(RedisTarget, app, app.name, f"redis://{host}:{port}/{db}")
    if target is not None:
        target._discovered_password = _value(env, "REDIS_PASSWORD")
    return target


def _valid_port(app: LaravelTarget, key: str, port: str, kind: str) -> bool:
    if port.isdigit() and 0 < int(port) < 65536:
        return True
    log.warning("laravel/%s: no %s target derived from .env (%s=%r is not a port number)",
                app.name, kind, key, port)
    return False


def _build(cls: type[T], app: LaravelTarget, name: str, url: str) -> T | None:
    try:
        return cls(name=name, url=url, laravel=app.name)
    except ValidationError as exc:
        # The .env is the app's, not ours: a value we cannot use is reported, not fatal.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        kind = "database" if cls is DatabaseTarget else "Redis"
        log.warning("laravel/%s: no %s target %r derived from .env (%s)", app.name, kind, name, problems)
        return None


def discovered_databases(config: Config) -> list[DatabaseTarget]:
    """Targets for every Laravel app not already covered by an explicit `databases` entry."""
    linked = {t.laravel for t in config.databases}
    names = {t.name for t in config.databases}
    return [
        t for app in config.laravel if app.name not in linked
        if (t := database_for(app)) is not None and t.name not in names
    ]


def discovered_redis(config: Config) -> list[RedisTarget]:
    """One target per Redis server not already watched, whichever app's `.env` names it first."""
    linked = {t.laravel for t in config.redis}
    names = {t.name for t in config.redis}
    servers = {_server(t.url) for t in config.redis}
    out = []
    for app in config.laravel:
        if app.name in linked or (t := redis_for(app)) is None or t.name in names:
            continue
        if (server := _server(t.url)) in servers:
            log.info("laravel/%s: Redis at %s is already watched", app.name, server)
            continue
        servers.add(server)
        out.append(t)
    return out


def _server(url: str) -> str:
    """host:port of a Redis URL (the socket path of a unix:// one)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
