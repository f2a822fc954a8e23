"""aiohttp's server with its error answers and error logs made safe to show a stranger.

aiohttp answers a request it cannot parse (a header line ending in a bare CR, as `curl -H @file` sends
from a token file with CRLF line ends; a NUL byte; a folded header; a space before the colon; an
overlong line) with 400 and the parser's message as the body, and that message quotes the offending
line: `Authorization: Bearer <the token>`. It also logs the same message at ERROR with a traceback for
every such request. Nothing cachewarden shows or logs may carry a header value, so parse errors and
handler errors get a fixed body (the status line's words) and one rate-limited log line naming the
error's class and the caller's address, never its message.

aiohttp has no public hook for that answer (`RequestHandler.handle_error` builds it, `web.Server`
constructs the handler), hence the small subclasses here, used by exporter.serving;
tests/integration/test_disclosure.py sends every malformed form to a real `cachewarden serve` and
fails if aiohttp's behaviour moves.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections import Counter
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from exporter.metrics import Samples, counter
from exporter.ratelimited_log import RateLimitedLog

log = logging.getLogger("cachewarden.http")

HTTP_ERRORS_TOTAL = counter(
    "cachewarden_http_errors_total",
    "Requests the HTTP server answered with an error itself: 400 for a request it could not parse "
    "(malformed request line or header), 500 for a handler that failed, 504 for one that timed out; "
    "499 (as nginx counts it) for a request whose client closed the connection before it was answered, "
    "which nothing was sent to; target is always 'cachewarden'.",
    ("status",),
)
HTTP_ERROR_METRICS = (HTTP_ERRORS_TOTAL,)


class HttpErrors:
    """The counts behind cachewarden_http_errors_total, a snapshot source for the app's registry."""

    def __init__(self) -> None:
        self.by_status: Counter[int] = Counter({400: 0, CLIENT_CLOSED: 0, 500: 0})

    def snapshot(self) -> list[Samples]:
        own = Samples("cachewarden")
        for status, n in sorted(self.by_status.items()):
            own.add(HTTP_ERRORS_TOTAL, n, status=str(status))
        return [own]


HTTP_ERRORS = web.AppKey("http_errors", HttpErrors)
CLIENT_CLOSED = 499  # nginx's "client closed request": counted, never sent (nobody is left to read it)


def client_gone(request: web.BaseRequest, exc: BaseException | None) -> bool:
    """True when `exc` is the client hanging up mid-request (a half-sent body, say), not a fault here.

    aiohttp raises ConnectionResetError from the request's body stream once the connection is lost;
    a reset from a connection of cachewarden's own (Redis, FastCGI) while the client still waits is a
    server error, so the client's connection must be gone as well.
    """
    if not isinstance(exc, ConnectionResetError):
        return False
    transport = request.transport
    return transport is None or transport.is_closing()


def fixed_error_text(status: int) -> str:
    """The whole body of an error answer: the status line's words, nothing taken from the request."""
    try:
        return f"{status} {HTTPStatus(status).phrase}\n"
    except ValueError:
        return f"{status}\n"


def exception_text(exc: BaseException | None) -> str:
    """An exception as its class, and for an OSError the system's words for its errno: never its
    message, which may quote what a request sent (an `int()` of a header value, say)."""
    if exc is None:
        return "-"
    name = type(exc).__name__
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{name}: [Errno {exc.errno}] {os.strerror(exc.errno)}"
    return name


def where(exc: BaseException | None) -> str:
    """The innermost frame of `exc` as file:line (function): source locations, never the message."""
    frames = traceback.extract_tb(exc.__traceback__) if exc is not None else []
    if not frames:
        return "unknown location"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} ({last.name})"


class _GuardedRequestHandler(RequestHandler):
    __slots__ = ("_errors", "_limited")

    def __init__(self, manager: web.Server, *, limited: RateLimitedLog, errors: HttpErrors,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limited = limited  # one per server, shared by its connections
        self._errors = errors

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # `message` and str(exc) quote the request's bytes: neither is logged nor sent.
        if status == 500 and client_gone(request, exc):
            # The client's doing, not a failure of the server: neither a 5xx nor worth an ERROR.
            self._errors.by_status[CLIENT_CLOSED] += 1
            log.debug("the client %s closed the connection before it was answered", request.remote)
            status = CLIENT_CLOSED
            if request.writer.output_size > 0:
                raise ConnectionError("response already started, cannot send an error response")
            resp = web.Response(status=status, text=fixed_error_text(status), content_type="text/plain")
            resp.force_close()
            return resp
        self._errors.by_status[status] += 1
        if status >= 500:
            self._limited.error(f"handler-{status}", "answered %d to a request from %s: %s at %s", status,
                                request.remote, exception_text(exc) if exc else "timeout", where(exc))
        else:
            self._limited.warning(f"refused-{status}",
                                  "refused a malformed HTTP request from %s with %d (%s)",
                                  request.remote, status, type(exc).__name__ if exc else "no detail")
        if request.writer.output_size > 0:  # as aiohttp does: the answer has begun, the connection is lost
            raise ConnectionError("response already started, cannot send an error response")
        resp = web.Response(status=status, text=fixed_error_text(status), content_type="text/plain")
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        exc = exc if isinstance(exc, BaseException) else None
        what = args[0] if args and isinstance(args[0], str) else "error"
        # Not the message's arguments, which may hold a request's repr, nor a traceback.
        self._limited.error("server-error", "%s: %s at %s", what, exception_text(exc), where(exc))


class _GuardedServer(web.Server):
    limited: RateLimitedLog
    errors: HttpErrors

    def __call__(self) -> RequestHandler:
        return _GuardedRequestHandler(self, limited=self.limited, errors=self.errors, loop=self._loop,
                                      **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An `AppRunner` whose connections answer parse and handler errors with `fixed_error_text`,
    counted in the app's HTTP_ERRORS (when the app has one, as create_app's does)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The same server, built by aiohttp from the app; only the protocol it hands out differs.
        server.__class__ = _GuardedServer
        guarded = cast(_GuardedServer, server)
        guarded.limited = RateLimitedLog(log)
        guarded.errors = self.app.get(HTTP_ERRORS) or HttpErrors()
        return guarded
