"""How `serve` listens: its sockets, and the limits that keep a connection flood from starving it.

aiohttp reads a request header with no deadline (its keepalive_timeout is an idle timer), accepts
connections without bound, and asyncio's accept loop takes a whole backlog of connections before any
protocol factory could refuse one, then logs a traceback for each accept() that fails. Measured before
these limits: 600 slow connections against a process with a 256-descriptor table made every scrape
time out, failed the collectors with "Too many open files" and wrote 10 MB of tracebacks in 10 s.
Neither library has a setting for it, so it is written here, around aiohttp's runner (whose request
handlers still parse and answer every request): an accept loop of its own, the server's
connection_made/connection_lost calls, and one middleware that marks connections busy.

- A connection that has not sent a whole request header `read_header_timeout` after it opened, or
  after its previous response, is closed (idle keep-alive connections included).
- Open connections are capped, by default at RLIMIT_NOFILE less what the collectors and the heal
  need (exporter.descriptors counts it at start; at least a quarter of a large table, 64 at least,
  is kept), so a flood cannot make a views walk, a FastCGI call or a database connection fail. A
  table too small for that and MIN_CONNECTIONS refuses to start (`DescriptorShortage`). At most
  about half of the cap may be connections still waiting for a request header, and two slots are
  only ever for requests in progress: past that the *oldest* waiting one is closed to make room,
  which is a slow client, never a scrape (a scrape sends its header at once). Past the cap, a new
  connection is reset at once.
- A scrape that arrives behind a flood is never evicted before its header is read: each readiness
  event of the listening socket admits at most `accept_batch` connections, and a connection needs
  SCRAPE_ITERATIONS turns of the event loop from accept() to its handler, so more than
  `SCRAPE_ITERATIONS * accept_batch` waiting slots means newer ones push out older ones first.
- What was closed is counted in `cachewarden_http_connections_closed_total{reason}` and logged once a
  minute at most, without tracebacks; so are failed accept() calls.
- `[::]` listens dual-stack (see `listening_sockets`).
- With `--web.config.file` TLS (exporter/web_config.py), each accepted connection is handed its
  handshake here, with the context current at that moment and the header's deadline; a failed one
  is counted (`tls_handshake_failed`) and logged like the others, never with a traceback. A
  connection still in its handshake counts as waiting, and the oldest of those is ended to make room
  as the oldest waiting for a header is: silent clients cannot hold the slots a scrape needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import signal
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from exporter.config import WebConfig
from exporter.http_server import (
    CLIENT_CLOSED,
    HTTP_ERRORS,
    GuardedAppRunner,
    client_gone,
    exception_text,
    fixed_error_text,
    where,
)
from exporter.metrics import Samples, counter, gauge

log = logging.getLogger(__name__)

RESERVE_MIN = 64  # descriptors kept for collectors, the heal and the process itself, on a large table
LOG_INTERVAL = 60.0  # seconds between two log lines about closed connections
SWEEP_INTERVAL = 0.5
BACKLOG = 1024  # a burst of connections waits in the kernel, not dropped, until it is sorted out
# Connections accepted per readiness event. Those closed to make room free their descriptors only in
# the loop's next iteration, so the cap leaves this many spare.
ACCEPT_BATCH = 16
ACCEPT_CALLS = 64  # accept() calls per readiness event at most (refused ones included): the loop goes on
MIN_CONNECTIONS = 8  # fewer, and a flood of slow clients could leave no slot for a scrape
BUSY_SLOTS = 2  # slots a waiting connection never takes: a request in progress always has room
SCRAPE_ITERATIONS = 5  # event loop turns from accept() to the handler: connect, connected, read, parse, run
COMFORT_CONNECTIONS = 64  # fewer, and start warns that the descriptor table is small
ACCEPT_RETRY = 1.0  # seconds before accepting again after running out of descriptors
REASONS = ("header_timeout", "make_room", "over_limit", "accept_failed", "tls_handshake_failed")

HTTP_CONNECTIONS = gauge(
    "cachewarden_http_connections",
    "Open connections to cachewarden's HTTP server by state (waiting: no whole request header yet, or "
    "idle; busy: a request in progress); target is always 'cachewarden'.", ("state",))
HTTP_MAX_CONNECTIONS = gauge(
    "cachewarden_http_max_connections",
    "The cap on open connections (derived from RLIMIT_NOFILE unless web.max_connections is set); "
    "target is always 'cachewarden'.")
HTTP_CLOSED = counter(
    "cachewarden_http_connections_closed_total",
    "Connections cachewarden closed or could not accept: header_timeout (no whole request header in "
    "web.read_header_timeout), make_room (oldest waiting one closed for a new one), over_limit (closed "
    "at once: the cap is reached), accept_failed (accept() failed, e.g. out of descriptors), "
    "tls_handshake_failed (a TLS handshake failed or took over web.read_header_timeout: a plain-HTTP "
    "client, a refused client certificate); target is always 'cachewarden'.", ("reason",))
HTTP_METRICS = (HTTP_CONNECTIONS, HTTP_MAX_CONNECTIONS, HTTP_CLOSED)

_ACCEPT_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class DescriptorShortage(Exception):
    """RLIMIT_NOFILE cannot hold what the collectors need and MIN_CONNECTIONS; the message says how much."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int
    max_waiting: int
    read_header_timeout: float
    accept_batch: int = ACCEPT_BATCH  # connections admitted per readiness event
    nofile: int = 0  # the descriptor table the caps were made for
    short: str | None = None  # why the table is small for serving, when it is (logged at start)

    @classmethod
    def for_process(cls, web_config: WebConfig, nofile: int | None = None, reserved: int = 0,
                    explain: str = "") -> Limits:
        """The caps for a descriptor table of `nofile` entries (default: this process's soft limit),
        of which `reserved` are the collectors', the heal's and those open already (`explain` says how
        they add up, for the messages). Raises DescriptorShortage when fewer than MIN_CONNECTIONS fit."""
        if nofile is None:
            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile == resource.RLIM_INFINITY or nofile <= 0:
            nofile = 1 << 20
        # A large table keeps a quarter (64 at least) besides the counted need: the count is an
        # estimate, and DNS look-ups, imports and log rotation take descriptors too.
        reserve = max(reserved, min(max(RESERVE_MIN, nofile // 4), nofile - COMFORT_CONNECTIONS))
        room = nofile - reserve
        batch = min(ACCEPT_BATCH, max(1, room // (4 * SCRAPE_ITERATIONS)))
        # Connections closed to make room free their descriptors in the loop's next turn, and a
        # refused one holds one until close(): the cap leaves that many spare.
        fitting = room - batch - 1
        needed = reserved + MIN_CONNECTIONS + 2
        comfortable = reserved + COMFORT_CONNECTIONS + ACCEPT_BATCH + 1
        how = "ulimit -n, LimitNOFILE= in the systemd unit, docker run --ulimit nofile="
        held = explain or f"{reserved} reserved"
        if fitting < MIN_CONNECTIONS:
            raise DescriptorShortage(
                f"RLIMIT_NOFILE (ulimit -n) is {nofile}, too small to serve: {held}, and at least "
                f"{MIN_CONNECTIONS} HTTP connections with {batch + 1} spare; raise it to at least "
                f"{needed}, better {comfortable} ({how})")
        short = None
        if fitting < COMFORT_CONNECTIONS:
            short = (f"RLIMIT_NOFILE (ulimit -n) is {nofile}: after {held}, only {fitting} HTTP connections "
                     f"fit, which a few slow clients fill; raise it to {comfortable} or more ({how})")
        cap = web_config.max_connections or fitting
        if cap > fitting:
            log.warning("web.max_connections %d leaves too few of the %d descriptors "
                        "(ulimit -n, LimitNOFILE=) for the collectors; using %d", cap, nofile, fitting)
            cap = fitting
        waiting = max(1, min(cap - BUSY_SLOTS, max(cap // 2, SCRAPE_ITERATIONS * batch + 1)))
        # A small web.max_connections admits fewer per turn, so that a scrape still gets its header read.
        batch = min(batch, max(1, (waiting - 1) // SCRAPE_ITERATIONS))
        return cls(cap, waiting, web_config.read_header_timeout, batch, nofile, short)


class ConnectionGuard:
    """Counts and caps the connections of one server; a snapshot source for its metrics.

    `admit` decides on each accepted connection, `connected`/`disconnected` follow the server's own
    connection_made/connection_lost, and `middleware` marks the time a connection spends on a
    request, the only time it is not waiting for a header.
    """

    def __init__(self, limits: Limits, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._now = monotonic
        self._pending = 0  # handlers made for accepted connections that asyncio has not connected yet
        # Those of them in a TLS handshake, oldest first: its deadline and how to end it to make room.
        self._handshaking: dict[RequestHandler, tuple[float, Callable[[], None]]] = {}
        self._abandoned: set[RequestHandler] = set()  # handshakes ended to make room, already uncounted
        self._waiting: dict[RequestHandler, float] = {}  # oldest first, with their deadline
        self._busy: set[RequestHandler] = set()
        self.closed: Counter[str] = Counter({r: 0 for r in REASONS})
        self._unlogged: Counter[str] = Counter()
        self._next_log = 0.0
        self._last_accept_error = ""
        self.handler_errors = 0
        self._handler_errors_logged = 0
        self._next_handler_log = 0.0

    @property
    def open_connections(self) -> int:
        return self._pending + len(self._waiting) + len(self._busy)

    def admit(self) -> bool:
        """Whether a connection just accepted may stay, after closing the oldest waiting ones if need be."""
        # Connections not connected yet count as waiting: they have sent nothing that was read.
        while (self._pending + len(self._waiting) >= self.limits.max_waiting
               or self.open_connections >= self.limits.max_connections) \
                and (self._waiting or self._handshaking):
            self._make_room()
        if self.open_connections >= self.limits.max_connections:
            self._count("over_limit")
            return False
        self._pending += 1
        return True

    def handshaking(self, handler: RequestHandler, end: Callable[[], None]) -> None:
        """An admitted connection's TLS handshake began; `end` stops it if the room is needed.

        A client that opens connections and sends no ClientHello is a slow client like one that sends
        no header: it may hold a waiting slot for read_header_timeout at most, and the oldest is closed
        first when a new connection needs its slot.
        """
        self._handshaking[handler] = (self._now() + self.limits.read_header_timeout, end)

    def not_connected(self, handler: RequestHandler | None = None) -> bool:
        """An admitted connection failed before its handler was connected; False if the guard itself
        ended it (to make room) and has counted it already."""
        if handler is not None and handler in self._abandoned:
            self._abandoned.discard(handler)
            return False
        if handler is not None:
            self._handshaking.pop(handler, None)
        self._pending = max(0, self._pending - 1)
        return True

    def connected(self, handler: RequestHandler) -> None:
        if handler in self._abandoned:  # its handshake finished as it was being ended: it closes next
            self._abandoned.discard(handler)
        else:
            self._handshaking.pop(handler, None)
            self._pending = max(0, self._pending - 1)
        self._waiting[handler] = self._now() + self.limits.read_header_timeout

    def disconnected(self, handler: RequestHandler) -> None:
        self._waiting.pop(handler, None)
        self._busy.discard(handler)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        conn = request.protocol
        if self._waiting.pop(conn, None) is not None:
            self._busy.add(conn)
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            errors = request.app.get(HTTP_ERRORS)
            if client_gone(request, exc):
                # The client hung up (a half-sent body): not a fault here, and nobody reads an answer.
                if errors is not None:
                    errors.by_status[CLIENT_CLOSED] += 1
                log.debug("the client %s closed the connection before it was answered", request.remote)
                return web.Response(status=CLIENT_CLOSED, text=fixed_error_text(CLIENT_CLOSED))
            # aiohttp would log a traceback per request: a fault that every request meets (out of
            # descriptors, say) would fill the disk. One line per interval, the rest counted.
            self._handler_failed(exc)
            if errors is not None:
                errors.by_status[500] += 1
            return web.Response(status=500, text="500 Internal Server Error\n")
        finally:
            if conn in self._busy:  # still open: its next request header has a deadline too
                self._busy.discard(conn)
                self._waiting[conn] = self._now() + self.limits.read_header_timeout

    def _make_room(self) -> None:
        """Close the oldest slow connection: one waiting for a header, or one still in its handshake."""
        waiting = next(iter(self._waiting.items()), None)
        handshake = next(iter(self._handshaking.items()), None)
        if handshake is not None and (waiting is None or handshake[1][0] <= waiting[1]):
            handler, (_, end) = handshake
            del self._handshaking[handler]
            self._pending = max(0, self._pending - 1)
            self._abandoned.add(handler)
            end()
            self._count("make_room")
        elif waiting is not None:
            self._close(waiting[0], "make_room")

    def _close(self, handler: RequestHandler, reason: str) -> None:
        del self._waiting[handler]
        handler.force_close()  # connection_lost follows, which calls `disconnected`
        self._count(reason)

    def sweep(self) -> None:
        """Close the waiting connections past their deadline; log what was closed, once a minute."""
        now = self._now()
        for handler in [h for h, deadline in self._waiting.items() if deadline <= now]:
            self._close(handler, "header_timeout")
        self._flush_log(now)

    def _handler_failed(self, exc: Exception) -> None:
        self.handler_errors += 1
        now = self._now()
        if now >= self._next_handler_log:
            # The class, errno text and source line; not the message nor a traceback, which may
            # quote what the request sent (exporter.http_server).
            log.error("a request failed (%d since the last report): %s at %s", self.handler_errors
                      - self._handler_errors_logged, exception_text(exc), where(exc))
            self._handler_errors_logged = self.handler_errors
            self._next_handler_log = now + LOG_INTERVAL

    def handshake_failed(self) -> None:
        self._count("tls_handshake_failed")

    def accept_failed(self, exc: OSError) -> None:
        self._last_accept_error = os.strerror(exc.errno or 0)
        self._count("accept_failed")

    def _count(self, reason: str) -> None:
        self.closed[reason] += 1
        self._unlogged[reason] += 1
        self._flush_log(self._now())

    def _flush_log(self, now: float) -> None:
        if not self._unlogged or now < self._next_log:
            return
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self._unlogged.items()))
        failed = (f"; accept() failed: {self._last_accept_error}" if self._unlogged["accept_failed"]
                  else "")
        log.warning("HTTP connections closed since the last report: %s (%d open, at most %d, of which "
                    "at most %d waiting for a request header; read_header_timeout %gs)%s",
                    parts, self.open_connections, self.limits.max_connections,
                    self.limits.max_waiting, self.limits.read_header_timeout, failed)
        self._unlogged.clear()
        self._next_log = now + LOG_INTERVAL

    def snapshot(self) -> list[Samples]:
        own = Samples("cachewarden")
        own.add(HTTP_CONNECTIONS, self._pending + len(self._waiting), state="waiting")
        own.add(HTTP_CONNECTIONS, len(self._busy), state="busy")
        own.add(HTTP_MAX_CONNECTIONS, self.limits.max_connections)
        for reason in REASONS:
            own.add(HTTP_CLOSED, self.closed[reason], reason=reason)
        return [own]


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for HOST:PORT; `::` is dual-stack (IPv4 too) wherever the host allows it.

    asyncio binds `::` with IPV6_V6ONLY, so `[::]:9590` would refuse IPv4 clients; here it is unset, as
    Go's net.Listen does for the unspecified address. A host without IPv6 gets 0.0.0.0 instead. Other
    hosts bind every address they resolve to (`localhost`: 127.0.0.1 and ::1), each v6 one v6-only.
    """
    if host == "::":
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            return listening_sockets("0.0.0.0", port)  # IPv6 is switched off on this host
        with contextlib.suppress(OSError):  # some hosts forbid dual-stack sockets: IPv6 only, then
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return [_bind(sock, ("::", port))]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _, address in dict.fromkeys((i[0], i[1], i[2], None, i[4]) for i in infos):
            sock = socket.socket(family, type_, proto)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            socks.append(_bind(sock, address))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _bind(sock: socket.socket, address: Any) -> socket.socket:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Acceptor:
    """Accepts on one listening socket, one connection at a time, each admitted or closed at once.

    asyncio's own accept loop takes a whole backlog of connections before the protocol factory sees
    the first one, so it runs out of descriptors before any cap could apply, and then logs a traceback
    per failed accept(). Here a connection over the cap holds its descriptor for no longer than accept()
    and close().
    """

    def __init__(self, sock: socket.socket, guard: ConnectionGuard,
                 handlers: Callable[[], RequestHandler],
                 tls: Callable[[], ssl.SSLContext | None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._tls = tls
        self._sock = sock
        self._guard = guard
        self._handlers = handlers
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def start(self) -> None:
        if not self._stopped:  # a retry scheduled before stop() finds the socket closed
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def stop(self) -> None:
        self._stopped = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _accept(self) -> None:
        admitted = 0
        for _ in range(ACCEPT_CALLS):  # then let the loop serve the connections it has
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_ERRNOS:
                    # Out of descriptors all the same (the collectors hold many): try again in a while;
                    # the kernel keeps the connections queued meanwhile.
                    self._guard.accept_failed(exc)
                    self._loop.remove_reader(self._sock.fileno())
                    self._loop.call_later(ACCEPT_RETRY, self.start)
                return  # ECONNABORTED and the like: the next readiness event carries on
            if not self._guard.admit():
                # A reset, not a FIN: the descriptor and the kernel's socket are gone at once.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            task = self._loop.create_task(self._connect(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            admitted += 1
            if admitted >= self._guard.limits.accept_batch:
                # The rest wait in the kernel for the next turn: a scrape admitted now must get its
                # header read before enough newer connections arrive to push it out.
                return

    async def _connect(self, conn: socket.socket) -> None:
        # The context is asked for per connection: a rotated certificate is served from the next one.
        # Until its handshake completes a connection counts as waiting, and the handshake has the
        # header's deadline.
        context = self._tls() if self._tls is not None else None
        made: list[RequestHandler] = []

        task = asyncio.current_task()

        def end_handshake() -> None:
            if task is not None:
                task.cancel()

        def protocol() -> RequestHandler:  # called before the handshake, connected after it
            handler = self._handlers()
            made.append(handler)
            if context is not None:
                self._guard.handshaking(handler, end_handshake)
            return handler

        try:
            if context is None:
                await self._loop.connect_accepted_socket(protocol, sock=conn)
            else:
                await self._loop.connect_accepted_socket(
                    protocol, sock=conn, ssl=context,
                    ssl_handshake_timeout=self._guard.limits.read_header_timeout)
        except (OSError, asyncio.CancelledError) as exc:
            # The client left already, its handshake failed or timed out, or it was ended to make room.
            conn.close()
            ours = self._guard.not_connected(made[0] if made else None)
            if isinstance(exc, asyncio.CancelledError):
                if ours:  # not the guard's doing: the loop is shutting down
                    raise
                return
            if context is not None and ours:
                self._guard.handshake_failed()


async def serve(app: web.Application, sockets: list[socket.socket], limits: Limits,
                register: Callable[[ConnectionGuard], None], shutdown_timeout: float = 10.0,
                tls: Callable[[], ssl.SSLContext | None] | None = None) -> None:
    """Serve `app` on `sockets` until SIGTERM or SIGINT, then shut down gracefully.

    `register` receives the guard before the app starts, to expose its metrics. `tls`, when given,
    returns the context each new connection is served with (None: plain HTTP).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Header lines over 8 KiB are not a client of ours (aiohttp's defaults, made explicit). aiohttp's
    # own idle timer is a backstop behind the sweeper, which counts what it closes. No
    # handler_cancellation: a manual heal run must not stop half-way because its caller hung up.
    # GuardedAppRunner: a request aiohttp cannot parse is answered and logged without its bytes.
    runner = GuardedAppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout,
                              max_line_size=8190, max_field_size=8190,
                              keepalive_timeout=limits.read_header_timeout + 2 * SWEEP_INTERVAL)

    def handlers() -> RequestHandler:
        assert runner.server is not None
        return runner.server()

    guard = ConnectionGuard(limits)
    app.middlewares.insert(0, guard.middleware)
    register(guard)
    await runner.setup()
    _follow_connections(runner.server, guard)
    acceptors = [_Acceptor(sock, guard, handlers, tls) for sock in sockets]
    sweeper = asyncio.create_task(_sweep_forever(guard), name="http-sweeper")
    try:
        for acceptor in acceptors:
            acceptor.start()
        await stop.wait()
    finally:
        sweeper.cancel()
        for acceptor in acceptors:
            acceptor.stop()
        await runner.cleanup()


def _follow_connections(server: web.Server | None, guard: ConnectionGuard) -> None:
    # web.Server learns of each connection through these two calls from its request handlers; the
    # guard needs to know too, and aiohttp offers no signal for it.
    assert server is not None
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        made(handler, transport)
        guard.connected(handler)

    def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
        lost(handler, exc)
        guard.disconnected(handler)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]


async def _sweep_forever(guard: ConnectionGuard) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL)
        guard.sweep()

