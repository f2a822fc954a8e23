"""The HTTP server's connection limits, on fake connections and a fake clock.

tests/integration/test_serve_limits.py holds the same limits against a real flood on a real process.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import WebConfig
from exporter.http_server import HTTP_ERRORS, HttpErrors
from exporter.serving import (
    BUSY_SLOTS,
    MIN_CONNECTIONS,
    SCRAPE_ITERATIONS,
    ConnectionGuard,
    DescriptorShortage,
    Limits,
)


class FakeConnection:
    """What the guard uses of aiohttp's RequestHandler: its transport, and force_close()."""

    def __init__(self) -> None:
        self.transport: object | None = object()

    def force_close(self) -> None:
        self.transport = None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard_with(max_connections: int, header_timeout: float = 10.0) -> tuple[ConnectionGuard, Clock]:
    clock = Clock()
    return ConnectionGuard(Limits(max_connections, max_connections // 2, header_timeout), clock), clock


def connect(guard: ConnectionGuard) -> FakeConnection | None:
    if not guard.admit():
        return None
    conn = FakeConnection()
    guard.connected(conn)  # type: ignore[arg-type]
    return conn


async def busy(guard: ConnectionGuard, conn: FakeConnection, until: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await until
        return web.Response()

    await guard.middleware(SimpleNamespace(protocol=conn), handler)  # type: ignore[arg-type]


@pytest.mark.parametrize(("nofile", "reserved", "expected"), [
    # A large table keeps a quarter (64 at least) whatever was counted; then a batch of accepts, +1.
    (1024, 0, (751, 375, 16)),  # 1024 - 256 = 768 room, batch 16, cap 768 - 17
    (256, 0, (182, 91, 9)),  # 192 room, batch 192 // 20
    (100, 0, (60, 30, 3)),  # the quarter may not leave fewer than 64: 36 kept, 64 room
    (100, 50, (47, 23, 2)),  # what the collectors need counts when it is more
    (32, 19, (11, 6, 1)),  # the tester's collectors under `ulimit -n 32`: 6 waiting > 5 turns x 1
])
def test_the_cap_leaves_what_the_collectors_need_and_a_spare_batch(
        nofile: int, reserved: int, expected: tuple[int, int, int]) -> None:
    limits = Limits.for_process(WebConfig(), nofile, reserved)
    assert (limits.max_connections, limits.max_waiting, limits.accept_batch) == expected


def test_a_table_that_cannot_hold_the_collectors_and_a_few_connections_refuses_naming_ulimit() -> None:
    # `ulimit -n 24` with views, fpm, opcache and redis: 19 counted, only 5 left for serving.
    with pytest.raises(DescriptorShortage) as raised:
        Limits.for_process(WebConfig(), 24, 19, "7 open at start, 12 for the collectors (views 4 x 1, ...)")
    message = str(raised.value)
    assert message.startswith("RLIMIT_NOFILE (ulimit -n) is 24, too small to serve: 7 open at start, 12 for")
    assert "raise it to at least 29, better 100" in message
    assert "LimitNOFILE=" in message
    assert Limits.for_process(WebConfig(), 29, 19).max_connections == MIN_CONNECTIONS


def test_a_table_with_little_room_for_connections_says_so() -> None:
    limits = Limits.for_process(WebConfig(), 48, 19, "the collectors")
    assert limits.short is not None
    assert limits.short.startswith(f"RLIMIT_NOFILE (ulimit -n) is 48: after the collectors, only "
                                   f"{limits.max_connections} HTTP connections fit")
    assert Limits.for_process(WebConfig(), 1024, 19).short is None


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=1, max_value=1 << 20), st.integers(min_value=0, max_value=2000))
def test_any_table_either_refuses_or_fits_the_reserve_connections_and_spare(nofile: int,
                                                                           reserved: int) -> None:
    try:
        limits = Limits.for_process(WebConfig(), nofile, reserved)
    except DescriptorShortage:
        assert nofile - reserved < MIN_CONNECTIONS + 2 + 8  # never refused with much room left
        return
    assert reserved + limits.max_connections + limits.accept_batch + 1 <= nofile
    assert limits.max_connections >= MIN_CONNECTIONS
    assert limits.max_waiting <= limits.max_connections - BUSY_SLOTS  # a request always has a slot
    # A scrape admitted behind a flood has its header read before it could be pushed out.
    assert limits.max_waiting > SCRAPE_ITERATIONS * limits.accept_batch


@pytest.mark.parametrize("cap", [4, 8, 20, 100])
def test_a_small_configured_cap_admits_few_enough_per_turn_for_a_scrape(cap: int) -> None:
    limits = Limits.for_process(WebConfig(max_connections=cap), 1024)
    assert limits.max_connections == cap
    assert limits.max_waiting <= cap - BUSY_SLOTS
    assert limits.max_waiting > SCRAPE_ITERATIONS * limits.accept_batch or limits.accept_batch == 1


def test_a_configured_cap_is_kept_below_what_the_descriptor_table_allows(
        caplog: pytest.LogCaptureFixture) -> None:
    assert Limits.for_process(WebConfig(max_connections=100), 1024).max_connections == 100
    assert Limits.for_process(WebConfig(max_connections=5000), 1024).max_connections == 751
    assert "web.max_connections 5000 leaves too few of the 1024 descriptors" in caplog.text


def test_past_the_waiting_cap_the_oldest_waiting_connection_is_closed_to_make_room() -> None:
    guard, _ = guard_with(10)
    conns = [connect(guard) for _ in range(5)]
    assert all(c is not None and c.transport is not None for c in conns)
    newest = connect(guard)
    assert newest is not None
    assert conns[0] is not None
    assert conns[0].transport is None
    assert all(c is not None and c.transport is not None for c in conns[1:])
    assert guard.closed["make_room"] == 1


async def test_a_connection_busy_with_a_request_is_never_closed_to_make_room() -> None:
    import asyncio

    guard, _ = guard_with(4)
    scrape = connect(guard)
    assert scrape is not None
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    request = asyncio.create_task(busy(guard, scrape, release))
    await asyncio.sleep(0)  # the middleware has marked the connection busy
    slow = [connect(guard) for _ in range(3)]
    # At most 2 of the 4 may wait: the third slow one closes the first, never the busy scrape.
    assert [c is not None and c.transport is not None for c in slow] == [False, True, True]
    assert scrape.transport is not None
    assert guard.closed["over_limit"] == 0
    assert guard.closed["make_room"] == 1
    release.set_result(None)
    await request
    # Back to waiting for its next request, as the newest one.
    assert list(guard._waiting)[-1] is scrape


def test_past_the_cap_with_every_connection_busy_a_new_one_is_refused() -> None:
    guard, _ = guard_with(4)
    for _ in range(4):
        conn = connect(guard)
        assert conn is not None
        guard._waiting.pop(conn)  # type: ignore[call-overload]
        guard._busy.add(conn)  # type: ignore[arg-type]
    assert not guard.admit()
    assert guard.closed["over_limit"] == 1


def test_a_waiting_connection_is_closed_once_its_header_deadline_passes() -> None:
    guard, clock = guard_with(10, header_timeout=2.0)
    early = connect(guard)
    clock.now += 1.5
    late = connect(guard)
    clock.now += 0.6
    guard.sweep()
    assert early is not None
    assert early.transport is None
    assert late is not None
    assert late.transport is not None
    assert guard.closed["header_timeout"] == 1


def test_closed_connections_are_logged_once_per_interval_without_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="exporter.serving")
    guard, clock = guard_with(4)
    for _ in range(500):
        connect(guard)
    clock.now += 30
    guard.sweep()
    assert len(caplog.records) == 1
    clock.now += 31
    guard.sweep()
    assert len(caplog.records) == 2
    assert "2 header_timeout, 497 make_room (0 open" in caplog.records[1].getMessage()
    assert all(r.exc_info is None for r in caplog.records)


def test_the_shipped_systemd_unit_raises_the_descriptor_table_past_systemds_default() -> None:
    from pathlib import Path

    unit = Path(__file__).resolve().parents[2] / "examples" / "systemd" / "cachewarden.service"
    values = [line.partition("=")[2] for line in unit.read_text(encoding="utf-8").splitlines()
              if line.startswith("LimitNOFILE=")]
    assert len(values) == 1
    assert int(values[0]) > 1024
    assert Limits.for_process(WebConfig(), int(values[0])).max_connections >= 8192


@pytest.mark.parametrize(("remote", "allowed"), [
    ("10.0.0.5", True),
    ("::ffff:10.0.0.5", True),  # an IPv4 client of a dual-stack socket, as aiohttp reports it
    ("::ffff:a00:5", True),  # the same address, written in hex
    ("::ffff:192.168.1.5", False),
    ("192.168.1.5", False),
    ("fd00::5", True),
    ("fd00::5%eth0", True),  # a scope id does not change the address
    ("::ffff:fd00:5", False),  # a mapped address is IPv4 only, never one of the IPv6 networks
    ("", False),
    (None, False),
    ("not-an-address", False),
])
def test_the_heal_allowlist_sees_ipv4_clients_of_a_dual_stack_socket_as_ipv4(remote: str | None,
                                                                             allowed: bool) -> None:
    from exporter.heal.guards import check_address, parse_networks

    refusal = check_address(remote, parse_networks(["10.0.0.0/8", "fd00::/8"]))
    assert (refusal is None) is allowed
    if not allowed:
        assert refusal is not None
        assert refusal.status == 403


def test_the_ipv6_unspecified_address_is_one_dual_stack_socket() -> None:
    import socket

    from exporter.serving import listening_sockets

    try:
        socks = listening_sockets("::", 0)
    except OSError as exc:  # pragma: no cover - a host without IPv6 gets 0.0.0.0, tested by the fallback
        pytest.skip(f"no IPv6 here: {exc}")
    try:
        assert len(socks) == 1
        sock = socks[0]
        if sock.family == socket.AF_INET6:
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        for s in socks:
            s.close()


def test_an_explicit_ipv4_address_binds_only_it() -> None:
    from exporter.serving import listening_sockets

    socks = listening_sockets("127.0.0.1", 0)
    try:
        assert [s.getsockname()[0] for s in socks] == ["127.0.0.1"]
    finally:
        for s in socks:
            s.close()


async def test_a_handler_that_keeps_failing_answers_500_with_one_line_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    guard, clock = guard_with(10)

    async def broken(request: web.Request) -> web.StreamResponse:
        raise OSError(24, "Too many open files")

    async def quoting(request: web.Request) -> web.StreamResponse:
        raise ValueError("invalid literal for int() with base 10: 'Bearer the-Secret-token'")

    for _ in range(100):
        conn = connect(guard)
        resp = await guard.middleware(SimpleNamespace(protocol=conn, app={}), broken)  # type: ignore[arg-type]
        assert resp.status == 500
    clock.now += 61
    await guard.middleware(SimpleNamespace(protocol=connect(guard), app={}), broken)  # type: ignore[arg-type]
    clock.now += 61
    counted = HttpErrors()
    app = {HTTP_ERRORS: counted}
    await guard.middleware(SimpleNamespace(protocol=connect(guard), app=app), quoting)  # type: ignore[arg-type]
    errors = [r for r in caplog.records if r.name == "exporter.serving" and r.levelno == logging.ERROR]
    here = f"{__file__}:"
    assert [r.getMessage().split(here)[0] for r in errors] == [
        "a request failed (1 since the last report): OSError: [Errno 24] Too many open files at ",
        "a request failed (100 since the last report): OSError: [Errno 24] Too many open files at ",
        "a request failed (1 since the last report): ValueError at "]
    assert all(here in r.getMessage() for r in errors)  # where: the handler's source line
    assert not any(r.exc_info for r in errors)  # no traceback
    assert "the-Secret-token" not in caplog.text
    assert counted.by_status[500] == 1  # cachewarden_http_errors_total{status="500"}


async def test_http_errors_a_handler_raises_on_purpose_pass_through() -> None:
    guard, _ = guard_with(10)

    async def not_found(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    with pytest.raises(web.HTTPNotFound):
        await guard.middleware(SimpleNamespace(protocol=connect(guard)), not_found)  # type: ignore[arg-type]


async def test_running_out_of_descriptors_in_accept_is_counted_and_retried_without_a_traceback_flood(
        caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import errno
    import socket

    from exporter.serving import _Acceptor

    class OutOfDescriptors(socket.socket):
        def accept(self) -> tuple[socket.socket, Any]:
            self.calls = getattr(self, "calls", 0) + 1
            raise OSError(errno.EMFILE, "Too many open files")

    listener = OutOfDescriptors(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    guard, _ = guard_with(10)
    acceptor = _Acceptor(listener, guard, lambda: None)  # type: ignore[arg-type,return-value]
    acceptor.start()
    client = socket.create_connection(listener.getsockname())
    try:
        for _ in range(20):  # the listener stays readable: without a pause it would spin
            await asyncio.sleep(0.01)
        assert guard.closed["accept_failed"] == 1
    finally:
        acceptor.stop()
        client.close()
    assert [r.levelno for r in caplog.records if r.name == "exporter.serving"] == [logging.WARNING]
    assert all(r.exc_info is None for r in caplog.records)


def test_a_tls_handshake_that_never_starts_is_ended_to_make_room_like_a_header_that_never_comes() -> None:
    guard, clock = guard_with(10)
    ended: list[int] = []
    silent = []
    for i in range(5):  # the waiting half of the cap: clients that connect and send no ClientHello
        assert guard.admit()
        handler = FakeConnection()
        guard.handshaking(handler, lambda i=i: ended.append(i))  # type: ignore[arg-type, misc]
        silent.append(handler)
        clock.now += 1

    scrape = connect(guard)  # a new connection: the oldest silent handshake makes room for it

    assert scrape is not None
    assert ended == [0]
    assert guard.closed["make_room"] == 1
    # The ended handshake then fails (its task is cancelled): it was counted once, not twice.
    assert guard.not_connected(silent[0]) is False  # type: ignore[arg-type]
    assert guard.open_connections == 5
    # One that completes its handshake is a waiting connection like any other.
    guard.connected(silent[1])  # type: ignore[arg-type]
    assert guard.open_connections == 5
    assert guard.not_connected(silent[2]) is True  # type: ignore[arg-type]
    assert guard.open_connections == 4
