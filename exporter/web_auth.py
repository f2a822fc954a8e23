"""What `--web.config.file` asks of each request: basic auth, response headers, the rate limit and the
client certificate's names.

- `basic_auth_users` guard every path but `/heal` (which has its own bearer token: Alertmanager's
  http_config sends one Authorization header, bearer or basic, never both) and `/healthz` (a liveness
  probe that shows only the version). A wrong or missing password answers 401 with
  `WWW-Authenticate: Basic`.
- bcrypt costs ~70 ms at cost 10. As in exporter-toolkit, a verified (user, hash, password) is
  remembered, keyed on a SHA-256 of the three, so a scrape every few seconds does not pay it again;
  failures are not remembered, and one check runs at a time, in a thread, so the event loop keeps
  serving while it runs. An unknown user is checked against a dummy hash of the same cost, so the
  answer's timing does not tell which users exist.
- `http_server_config.headers` are set on every response, `rate_limit` is a token bucket over all
  requests (429 past it), as the toolkit's handler does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import Awaitable, Callable

import bcrypt  # the reference implementation's C core, as Go's x/crypto/bcrypt
from aiohttp import web

from exporter.web_config import WebConfigFile, peer_sans

UNGUARDED = ("/heal", "/healthz")  # paths basic auth does not cover (see the module docstring)
CACHE_SIZE = 256  # verified credentials remembered; a full cache starts over


def _unguarded(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in UNGUARDED)


class TokenBucket:
    """golang.org/x/time/rate's Limiter: one token per `interval`, at most `burst`, starting full."""

    def __init__(self, interval: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.burst, self._now = interval, burst, monotonic
        self._tokens = float(burst)
        self._at = monotonic()

    def allow(self) -> bool:
        now = self._now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.interval)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class WebAuth:
    """The middleware and response hook that apply a `WebConfigFile` to an aiohttp app."""

    def __init__(self, web_config: WebConfigFile) -> None:
        self._file = web_config
        self._verified: set[bytes] = set()
        self._bcrypt = asyncio.Semaphore(1)
        self._dummy_hashes: dict[bytes, bytes] = {}  # cost prefix -> a hash of a password nobody has
        self._limiter: TokenBucket | None = None
        self._limit: tuple[float, int] = (0.0, 0)

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self.middleware)
        app.on_response_prepare.append(self._headers)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in self._file.current.http_server_config.headers.items():
            response.headers[name] = value

    def _rate_limited(self) -> bool:
        rl = self._file.current.rate_limit
        if rl.interval == 0:
            return False
        if self._limiter is None or self._limit != (rl.interval, rl.burst):
            self._limiter, self._limit = TokenBucket(rl.interval, rl.burst), (rl.interval, rl.burst)
        return not self._limiter.allow()

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if not self._file.tls:  # with TLS, each new connection reloads what changed
            self._file.refresh()
        config = self._file.current
        if self._rate_limited():
            raise web.HTTPTooManyRequests()
        sans = config.tls_server_config.client_allowed_sans
        if sans is not None and not peer_sans(_peercert(request)) & set(sans):
            # The toolkit ends the handshake; OpenSSL has no hook for it, so the request is refused.
            raise web.HTTPForbidden(text="403 Forbidden: the client certificate names none of "
                                         "client_allowed_sans\n")
        if config.basic_auth_users and not _unguarded(request.path) and not await self._authorized(request):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Basic"})
        return await handler(request)

    async def _authorized(self, request: web.Request) -> bool:
        credentials = _basic_credentials(request.headers.get("Authorization", ""))
        if credentials is None:
            return False
        user, password = credentials
        stored = self._file.current.basic_auth_users.get(user.decode("utf-8", "surrogateescape"))
        hashed = stored.encode() if stored is not None else await self._dummy(self._any_cost())
        key = hashlib.sha256(b"\0".join((user, hashed, password))).digest()
        if key in self._verified:
            return stored is not None
        async with self._bcrypt:
            ok = await asyncio.to_thread(_checkpw, password, hashed)
        if ok and stored is not None:
            if len(self._verified) >= CACHE_SIZE:
                self._verified.clear()
            self._verified.add(key)
            return True
        return False

    def _any_cost(self) -> bytes:
        first = next(iter(self._file.current.basic_auth_users.values()))
        return first.encode()[: first.rindex("$") + 1]  # "$2y$10$"

    async def _dummy(self, prefix: bytes) -> bytes:
        if prefix not in self._dummy_hashes:
            rounds = int(prefix.strip(b"$").split(b"$")[-1])
            self._dummy_hashes[prefix] = await asyncio.to_thread(
                bcrypt.hashpw, b"a password nobody has", bcrypt.gensalt(rounds))
        return self._dummy_hashes[prefix]


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # a password over 72 bytes (bcrypt 5 refuses it) or a hash it cannot read
        return False


def _basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    """(user, password) from `Authorization: Basic …`, as Go's Request.BasicAuth reads it."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _peercert(request: web.Request) -> dict[str, object] | None:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    return cert if isinstance(cert, dict) else None
