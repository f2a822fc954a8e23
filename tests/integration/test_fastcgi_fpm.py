"""The FastCGI client against a real php-fpm8.2: unix and TCP, CGI headers, STDERR, a saturated pool."""

from __future__ import annotations

import asyncio

import pytest

from exporter.php import fastcgi
from tests.support import phpfpm
from tests.support.phpfpm import FpmFactory

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm


async def test_unix_socket_request_parses_status_headers_and_stderr(php_fpm: FpmFactory) -> None:
    fpm = php_fpm()
    fpm.script("teapot.php", "<?php ini_set('error_log', ''); error_log('to-stderr');"
                             "http_response_code(418); header('Content-Type: text/plain'); echo 'short';")
    resp = await fpm.get("teapot.php")
    assert resp.status == 418
    assert resp.content_type is not None
    assert resp.content_type.startswith("text/plain")
    assert resp.body == b"short"
    assert b"to-stderr" in resp.stderr


async def test_tcp_request_carries_a_large_body(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(tcp=True)
    fpm.script("big.php", "<?php echo str_repeat('x', 300000);")
    resp = await fpm.get("big.php")
    assert resp.status == 200
    assert len(resp.body) == 300000


async def test_missing_script_is_a_404_from_fpm(php_fpm: FpmFactory) -> None:
    fpm = php_fpm()
    resp = await fpm.get("nope.php")
    assert resp.status == 404


async def test_every_worker_busy_times_out_after_connecting(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(pool={"pm.max_children": 1})
    holder, release = fpm.hold("only")
    try:
        await fpm.wait_held("only")
        # The connect succeeds (FPM's backlog accepts it); the answer never comes.
        params = {"SCRIPT_FILENAME": "/fpm-status", "SCRIPT_NAME": "/fpm-status"}
        with pytest.raises(fastcgi.FastCGITimeout, match=r"no complete response within 0\.3s"):
            await fastcgi.request(fpm.address, params, connect_timeout=1, read_timeout=0.3)
    finally:
        release.touch()
        resp = await holder
    assert resp.body == b"released"


async def test_stopped_pool_refuses_connections(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(tcp=True)
    fpm.stop()
    with pytest.raises(fastcgi.FastCGIConnectError):
        await fpm.get("/fpm-status", "json")


async def test_an_http_server_is_named_with_its_address() -> None:
    # A real HTTP server (aiohttp's) on the configured port: the mistake is pointing at the web server.
    from aiohttp import web

    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        address = f"127.0.0.1:{port}"
        with pytest.raises(fastcgi.MalformedRecord,
                           match=rf"^{address}: answered HTTP, not FastCGI: is this the web server's port"):
            await fastcgi.request(address, {"SCRIPT_FILENAME": "/x"}, connect_timeout=1, read_timeout=5)
    finally:
        await runner.cleanup()


async def test_a_silent_listener_times_out_naming_both_causes() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads until the client gives up, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(fastcgi.FastCGITimeout, match="every worker busy, a hung pool, or not a FastCGI"):
            await fastcgi.request(f"127.0.0.1:{port}", {}, connect_timeout=1, read_timeout=0.3)
