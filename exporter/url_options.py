"""Which query parameters of a database or Redis URL reach a driver that accepts them, checked at load.

SQLAlchemy hands every query parameter of a database URL to the driver's connect() as a keyword
(asyncpg: `create_connect_args` does `opts.update(url.query)`; asyncmy: the same, after turning
`ssl_ca`, `ssl_cert`, `ssl_key`, `ssl_capath`, `ssl_cipher` and `ssl_check_hostname` into its `ssl`
dict), and redis-py hands those it does not know to the connection class. A name the driver lacks
(`sslmode`, `options`, `foo`) would load and then fail every collection with "connect() got an
unexpected keyword argument"; one it has could silently replace a bound cachewarden sets itself
(`timeout`, `connect_timeout`, `socket_timeout`, `max_connections`, `protocol`). So each driver's
parameters are listed here with what their values may be, and anything else is refused by name.

libpq's `sslmode` is the one spelling translated (to asyncpg's `ssl`, which takes the same six
modes; `translate_libpq`), since it is what a PostgreSQL URL usually carries. No library states
these lists: they are read from asyncpg.connect(), asyncmy's Connection and SQLAlchemy's dialects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

Check = Callable[[str], str | None]  # a problem with the value, or None

_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_BOOLEANS = ("true", "false", "yes", "no", "on", "off", "1", "0")  # sqlalchemy.util.asbool, redis-py to_bool


def _one_of(*allowed: str, fold: bool = False) -> Check:
    def check(value: str) -> str | None:
        if (value.lower() if fold else value) in allowed:
            return None
        return f"is {value!r}, expected one of {', '.join(allowed)}"
    return check


def _count(value: str) -> str | None:
    return None if value.isdigit() else f"is {value!r}, expected a whole number"


def _text(value: str) -> str | None:
    return None if value else "is empty"


_POSTGRES: Mapping[str, Check] = {
    "host": _text,  # a Unix socket directory, or a host when the URL has none
    "ssl": _one_of(*_SSL_MODES),
    "sslmode": _one_of(*_SSL_MODES),  # libpq's name, translated to ssl
    "target_session_attrs": _one_of("any", "primary", "standby", "read-write", "read-only",
                                    "prefer-standby"),
    "passfile": _text,
    "service": _text,
    "servicefile": _text,
    "krbsrvname": _text,
    "gsslib": _one_of("gssapi", "sspi"),
    "prepared_statement_cache_size": _count,  # SQLAlchemy's own, made an int by its dialect
}
_MYSQL: Mapping[str, Check] = {
    "unix_socket": _text,
    "charset": _text,
    "ssl_ca": _text,
    "ssl_cert": _text,
    "ssl_key": _text,
    "ssl_capath": _text,
    "ssl_cipher": _text,
    "ssl_check_hostname": _one_of(*_BOOLEANS, fold=True),
    "read_timeout": _count,
    "program_name": _text,
}
_SQL = {"postgresql": _POSTGRES, "mysql": _MYSQL, "mariadb": _MYSQL}
_SQL_HINTS = {
    "options": "asyncpg takes no libpq options string; cachewarden sets its session settings itself",
    "connect_timeout": "cachewarden sets it from collectors.sql.timeout",
    "timeout": "cachewarden sets it from collectors.sql.timeout",
    "ssl_mode": "asyncmy takes ssl_ca (with ssl_cert, ssl_key, ssl_check_hostname) instead",
    "ssl-mode": "asyncmy takes ssl_ca (with ssl_cert, ssl_key, ssl_check_hostname) instead",
    "sslrootcert": "asyncpg reads it from PGSSLROOTCERT or ~/.postgresql/root.crt, not the URL",
}

_REDIS: Mapping[str, Check] = {"db": _count}
_REDISS: Mapping[str, Check] = {
    "db": _count,
    "ssl_cert_reqs": _one_of("none", "optional", "required"),
    "ssl_ca_certs": _text,
    "ssl_certfile": _text,
    "ssl_keyfile": _text,
    "ssl_check_hostname": _one_of(*_BOOLEANS, fold=True),
}
_REDIS_HINT = ("cachewarden sets the connection's timeouts, pool size and protocol itself; the URL may "
               "carry db")


def _problem(pairs: list[tuple[str, str]], accepted: Mapping[str, Check], hints: Mapping[str, str],
             default_hint: str) -> str | None:
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            return f"query parameter {name!r} is given twice"
        seen.add(name)
        if name not in accepted:
            why = hints.get(name, default_hint)
            return (f"query parameter {name!r} is not one the driver accepts ({why}); accepted: "
                    f"{', '.join(sorted(accepted))}")
        if (wrong := accepted[name](value)) is not None:
            return f"query parameter {name!r} {wrong}"
    return None


def sql_query_problem(backend: str, query: Mapping[str, str | tuple[str, ...]]) -> str | None:
    """What is wrong with the query parameters of a database URL for `backend` ("postgresql",
    "mysql", "mariadb"), as SQLAlchemy's make_url parsed them; None when every one is accepted."""
    pairs = [(k, v) for k, vs in query.items() for v in ((vs,) if isinstance(vs, str) else vs)]
    if backend == "postgresql" and "ssl" in query and "sslmode" in query:
        return "query parameters 'ssl' and 'sslmode' say the same thing: give one"
    accepted = _SQL[backend]
    default = ("asyncpg.connect() has no such argument" if backend == "postgresql"
               else "asyncmy's connect() has no such argument")
    return _problem(pairs, accepted, _SQL_HINTS, default)


def translate_libpq(query: Mapping[str, str | tuple[str, ...]]) -> dict[str, str | tuple[str, ...]]:
    """The query of a PostgreSQL URL for asyncpg: libpq's `sslmode` becomes `ssl` (the same modes)."""
    out = dict(query)
    if "sslmode" in out:
        out["ssl"] = out.pop("sslmode")
    return out


def redis_query_problem(url: str) -> str | None:
    """What is wrong with the query parameters of a redis://, rediss:// or unix:// URL for redis-py
    (whose from_url lets them override cachewarden's own options); None when every one is accepted."""
    parts = urlsplit(url)
    accepted = _REDISS if parts.scheme.lower() == "rediss" else _REDIS
    hints = {name: "only a rediss:// URL takes TLS options" for name in _REDISS if name not in accepted}
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    return _problem(pairs, accepted, hints, _REDIS_HINT)
