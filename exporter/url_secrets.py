"""Whether a URL carries a credential: the one rule every URL-typed configuration key is checked by.

A URL is shown wherever a target is named (logs, `check`, the status page, error messages of the
libraries it is handed to), so a secret must never travel in one. Client libraries take credentials
from more places than the user part: redis-py reads `?password=` on any URL form (unix:// included),
libpq and asyncpg read `?password=` and `?sslpassword=`, and many HTTP services take `?token=` or
`?api_key=`. The rule covers each way.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

# Query parameter names (lower case, "-" read as "_") that carry a secret by name.
SECRET_PARAMETERS = frozenset({
    "password", "passwd", "pass", "pwd", "auth", "secret", "token", "sslpassword", "access_token",
    "auth_token", "api_key", "apikey", "client_secret", "credentials", "credential",
})
# ... or by ending: db_password, redis_pwd, x_auth_token, app_secret
_SECRET_SUFFIXES = ("password", "passwd", "_pwd", "_secret", "_token")
_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")


def is_secret_parameter(name: str) -> bool:
    key = name.strip().lower().replace("-", "_")
    return key in SECRET_PARAMETERS or key.endswith(_SECRET_SUFFIXES)


def url_credential(url: str, *, user_is_secret: bool = False) -> str | None:
    """What credential `url` carries, in words that do not repeat it, or None.

    Found are a password in the user part (`scheme://user:secret@host`), any user part at all when
    `user_is_secret` (HTTP, where `https://TOKEN@host` is common), and a query parameter named as in
    SECRET_PARAMETERS or ending like one, compared case-insensitively and after percent-decoding.
    """
    authority = _AUTHORITY.match(url)
    userinfo, at, _ = (unquote(authority.group(1)).rpartition("@") if authority else ("", "", ""))
    if at:
        _user, colon, password = userinfo.partition(":")
        if colon and password:
            return "a password in the user part (user:password@)"
        if user_is_secret and userinfo:
            return "a user part (user@), which HTTP clients send as credentials"
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    for piece in (parts.query, parts.fragment) if parts else (url.partition("?")[2],):
        for name, _value in parse_qsl(piece, keep_blank_values=True):
            if is_secret_parameter(name):
                return f"the query parameter {name!r}"
    return None
