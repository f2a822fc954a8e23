"""The server's own answers to requests it cannot parse or handle: fixed text, one rate-limited line."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web

from exporter.app import create_app
from exporter.config import parse
from exporter.http_server import CLIENT_CLOSED, HTTP_ERRORS, GuardedAppRunner, HttpErrors
from exporter.ratelimited_log import RateLimitedLog
from tests.support.disclosure import hostile_requests
from tests.support.wait import async_wait_for, free_port

SECRET = "the-Secret-2231xy"


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError(f"a message that quotes the request: {request.headers.get('Authorization')}")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    app = web.Application()
    app.router.add_get("/boom", boom)
    runner = GuardedAppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield "127.0.0.1", port
    await runner.cleanup()


async def raw(address: tuple[str, int], data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    answer = b""
    try:
        # Until the server closes or the body is complete (a keep-alive answer leaves it open).
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            answer += chunk
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
        return answer
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_malformed_request_gets_a_fixed_body_and_one_line_without_traceback(
        server: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers = [await raw(server, data) for data in hostile_requests(SECRET).values()]

    malformed = [a for a in answers if a.startswith(b"HTTP/1.0 400") or a.startswith(b"HTTP/1.1 400")]
    assert len(malformed) >= 8
    for answer in malformed:
        assert answer.endswith(b"\r\n\r\n400 Bad Request\n")
    assert SECRET not in caplog.text
    assert "Traceback" not in caplog.text
    lines = [r for r in caplog.records if r.name == "cachewarden.http"]
    # Every malformed request arrived within the interval: one line stands for all of them.
    assert [r.getMessage() for r in lines] == [
        "refused a malformed HTTP request from 127.0.0.1 with 400 (BadHttpMessage)"]


async def test_a_handler_error_answers_500_without_its_message(
        server: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    async with ClientSession() as session, session.get(
            f"http://{server[0]}:{server[1]}/boom", headers={"Authorization": f"Bearer {SECRET}"}) as resp:
        assert resp.status == 500
        assert await resp.text() == "500 Internal Server Error\n"
    assert SECRET not in caplog.text
    assert "Traceback" not in caplog.text
    [line] = [r.getMessage() for r in caplog.records if r.name == "cachewarden.http"]
    assert line.startswith("answered 500 to a request from 127.0.0.1: RuntimeError at ")
    assert "test_http_server.py" in line


def test_rate_limited_lines_say_how_many_were_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("test.limited"), interval=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "test.limited")

    logged = [limited.warning("refused", "refused %s", i) for i in range(5)]
    now[0] += 10.0
    logged.append(limited.warning("refused", "refused %s", 5))
    logged.append(limited.warning("other", "another kind"))

    assert logged == [True, False, False, False, False, True, True]
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "refused 5 (and 4 more like it in the last 10s)", "another kind"]


async def test_the_apps_metrics_count_what_the_server_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CACHEWARDEN_HEAL_TOKEN", raising=False)
    runner = GuardedAppRunner(create_app(parse({}), collectors=[], run_collectors=False), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        address = ("127.0.0.1", port)
        before = await raw(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for data in list(hostile_requests(SECRET).values())[:3]:
            await raw(address, data)
        after = await raw(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await runner.cleanup()
    assert b'cachewarden_http_errors_total{status="400",target="cachewarden"} 0.0' in before
    assert b'cachewarden_http_errors_total{status="500",target="cachewarden"} 0.0' in before
    assert b'cachewarden_http_errors_total{status="400",target="cachewarden"} 3.0' in after


async def test_a_client_that_hangs_up_mid_body_is_a_client_abort_not_a_500(
        caplog: pytest.LogCaptureFixture) -> None:
    async def read_all(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    app = web.Application()
    app.router.add_post("/read", read_all)
    errors = app[HTTP_ERRORS] = HttpErrors()
    runner = GuardedAppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n{\"ve")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

        async def counted() -> bool:
            return errors.by_status[CLIENT_CLOSED] == 1

        await async_wait_for(counted, timeout=10, message="the hang-up counted as a client abort")
    finally:
        await runner.cleanup()
    assert errors.by_status[500] == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
