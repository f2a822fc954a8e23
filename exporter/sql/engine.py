"""The exporter's own database engine, bounded so that watching a server never loads it.

At most two connections (pool_size=1, max_overflow=1), autocommit (no transactions held open, nothing
to roll back when a connection returns to the pool), a statement timeout and a short lock wait set on
every new session, and a ping before reuse so a restarted server is reconnected to transparently.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from exporter.config import DatabaseTarget
from exporter.sql import mysql, postgres
from exporter.sql.stats import DbStats, StatementOptions
from exporter.url_options import translate_libpq

Reader = Callable[[AsyncConnection, StatementOptions], Awaitable[DbStats]]

_DEFAULT_DRIVER = {"mysql": "asyncmy", "mariadb": "asyncmy", "postgresql": "asyncpg"}


@dataclass(frozen=True, slots=True)
class BoundedEngine:
    engine: AsyncEngine
    read: Reader
    dialect: str  # "mysql" (MariaDB too) or "postgresql"
    parts: tuple[str, ...]  # the optional parts `read` may attempt


def database_url(url: str, password: str | None) -> URL:
    """The target's URL with its async driver filled in and the password attached (never printed:
    SQLAlchemy's URL masks it in str() and repr())."""
    parsed = make_url(url)
    parsed = parsed.set(drivername=parsed.drivername.lower())  # a scheme is case-insensitive
    backend = parsed.get_backend_name()
    if parsed.drivername == backend:
        parsed = parsed.set(drivername=f"{backend}+{_DEFAULT_DRIVER[backend]}")
    if backend == "postgresql":
        parsed = parsed.set(query=translate_libpq(parsed.query))  # libpq's sslmode=, asyncpg's ssl=
    return parsed.set(password=password) if password else parsed


def create_engine(target: DatabaseTarget, *, connect_timeout: float) -> BoundedEngine:
    url = database_url(target.url, target.password())
    backend = url.get_backend_name()
    common: dict[str, Any] = {
        "pool_size": 1,
        "max_overflow": 1,
        "pool_pre_ping": True,
        # Autocommit and read-only: nothing to roll back, and a ROLLBACK per collection would show up
        # among the server's statements as if an application had sent it.
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,
        "skip_autocommit_rollback": True,
    }
    if backend == "postgresql":
        engine = create_async_engine(
            url, **common, connect_args=postgres.connect_args(target, connect_timeout)
        )
        return BoundedEngine(engine, postgres.read_stats, "postgresql", postgres.PARTS)
    engine = create_async_engine(url, **common, connect_args=mysql.connect_args(connect_timeout))
    event.listen(engine.sync_engine, "connect", mysql.session_setup(target))
    return BoundedEngine(engine, mysql.read_stats, "mysql", mysql.PARTS)


def describe_error(exc: BaseException, secret: str | None) -> str:
    """A one-line account of a failed connection or query, fit for logs and the status page.

    SQLAlchemy's own message appends the statement and a documentation link; the driver's error is
    what a person needs. Whatever the driver says, the password is masked out of it.
    """
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(orig, SQLAlchemyError):
        text = str(orig).split("\n", 1)[0]
    else:
        args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
        # asyncmy errors carry (code, message); show them as "1045 Access denied ..."
        if len(args) == 2 and isinstance(args[0], int):
            text = f"{args[0]} {args[1]}"
        else:
            text = str(orig) or type(orig).__name__
    text = f"{type(orig).__name__}: {text}"
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"\s+", " ", text).strip()
