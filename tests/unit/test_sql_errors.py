"""How database failures are described: the driver's words, never the password."""

from __future__ import annotations

from asyncmy.errors import OperationalError
from sqlalchemy.exc import OperationalError as SAOperationalError

from exporter.config import DatabaseTarget
from exporter.sql.engine import database_url, describe_error


def test_the_driver_error_is_shown_without_sqlalchemy_noise_or_the_password() -> None:
    orig = OperationalError(1045, "Access denied for user 'shop'@'10.0.0.5' (hunter2-pw in a hint)")
    wrapped = SAOperationalError("SELECT 1", {}, orig)
    text = describe_error(wrapped, "hunter2-pw")
    assert text == "OperationalError: 1045 Access denied for user 'shop'@'10.0.0.5' (*** in a hint)"


def test_errors_without_a_code_keep_their_message() -> None:
    assert describe_error(ConnectionRefusedError("refused\nsecond line"), None) == (
        "ConnectionRefusedError: refused second line"
    )


def test_the_engine_url_carries_the_password_but_never_prints_it() -> None:
    url = database_url("mysql://shop@db:3306/shop", "hunter2-pw")
    assert url.drivername == "mysql+asyncmy"
    assert url.password == "hunter2-pw"
    assert "hunter2-pw" not in str(url)
    assert "hunter2-pw" not in repr(url)
    assert database_url("postgresql://u@h/d", None).drivername == "postgresql+asyncpg"


def test_statement_options_have_bounded_defaults() -> None:
    t = DatabaseTarget(name="main", url="mysql+asyncmy://u@h/d")
    assert (t.top_n, t.slow_threshold, t.digest_text_length) == (20, 0.1, 120)
