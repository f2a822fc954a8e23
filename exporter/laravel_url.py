"""Laravel's `Illuminate\\Support\\ConfigurationUrlParser`: the options a DB_URL/DATABASE_URL/REDIS_URL sets.

Laravel splits the URL with PHP's parse_url(), rawurldecode()s every part, turns each part that is JSON
into its value (`123` an int, `true` a bool, `null` null, which then drops the option), and merges the
query (parse_str(), the same JSON rule) over the primary options. Hand-written because Python's urlsplit
reads the authority otherwise: it lowercases the host and drops its brackets, and its `username` cannot
tell `redis://:pw@h` (an empty user, which Laravel sets and which then overrides REDIS_USERNAME) from
`redis://h`. Only the `scheme://authority` form is read; any other form (no `//`, a port PHP refuses)
raises UrlError, which a caller reports as a problem rather than guessing.
tests/integration/test_laravel_url_oracle.py holds it to Laravel's own parser, run by php, on a corpus.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

# ConfigurationUrlParser::$driverAliases (8.x to 12.x): exact, case-sensitive keys.
DRIVER_ALIASES = {"mssql": "sqlsrv", "mysql2": "mysql", "postgres": "pgsql", "postgresql": "pgsql",
                  "sqlite3": "sqlite", "redis": "tcp", "rediss": "tls"}
_SCHEME = re.compile(r"([A-Za-z0-9+.-]+)://")


class UrlError(ValueError):
    """The URL is not one Laravel parses, or not in a form this port reads as Laravel does."""


def _rawurldecode(text: str) -> str:
    return unquote_to_bytes(text).decode("utf-8", errors="replace")


def native(text: str) -> Any:
    """parseStringsToNativeTypes: the JSON value `text` spells (PHP's json_decode), else `text`."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # PHP's json_decode knows no NaN or Infinity


def php_string(value: Any) -> str | None:
    """How PHP casts an option's value to a string (None stays None: the option is unset)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, dict | list):
        raise UrlError("an option of the URL is an array")
    return str(value)


def parse(url: str) -> dict[str, Any]:
    """The options Laravel takes from `url`: driver, database, host, port, username, password and each
    query parameter, with PHP's native types (a port an int, `?database=2` an int). Raises UrlError."""
    m = _SCHEME.match(url)
    if m is None or url.startswith("sqlite"):
        raise UrlError("not a scheme://host URL")
    scheme = m.group(1)
    rest = url[m.end():]
    rest, _, _fragment = rest.partition("#")
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, rest = rest[:authority_end], rest[authority_end:]
    path, _, query = rest.partition("?")
    user = password = None
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
    host, port = authority, None
    if not (host.startswith("[") and host.endswith("]")) and ":" in host:
        host, _, digits = host.rpartition(":")
        if digits:
            if not digits.isascii() or not digits.isdigit() or len(digits) > 5 or int(digits) > 65535:
                raise UrlError("the port is not a number from 0 to 65535")
            port = int(digits)
    if host == "":
        raise UrlError("the URL names no host")
    raw: dict[str, Any] = {"scheme": scheme, "host": host, "port": port, "user": user, "pass": password,
                           "path": path or None}
    decoded = {k: native(_rawurldecode(v)) if isinstance(v, str) else v for k, v in raw.items()}
    driver = decoded["scheme"]
    driver = DRIVER_ALIASES.get(driver, driver) if isinstance(driver, str) else driver
    database = decoded["path"]
    database = database[1:] if isinstance(database, str) and database and database != "/" else None
    options = {k: v for k, v in (("driver", driver), ("database", database), ("host", decoded["host"]),
                                 ("port", decoded["port"]), ("username", decoded["user"]),
                                 ("password", decoded["pass"])) if v is not None}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if "[" in key:
            raise UrlError(f"the query parameter {key!r} is an array")
        options[re.sub(r"[. ]", "_", key)] = native(value)
    return options
