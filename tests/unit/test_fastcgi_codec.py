"""The FastCGI record codec and the client's error handling, against in-process fake servers."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from exporter.php import fastcgi
from exporter.php.fastcgi import (
    END_BODY,
    END_REQUEST,
    HEADER,
    OVERLOADED,
    STDERR,
    STDOUT,
    UNKNOWN_ROLE,
    MalformedRecord,
    RecordDecoder,
    decode_params,
    encode_params,
    encode_record,
    encode_stream,
    parse_cgi_output,
)


def end_request(protocol_status: int = 0, app_status: int = 0) -> bytes:
    return encode_record(END_REQUEST, END_BODY.pack(app_status, protocol_status))


def test_params_round_trip_with_one_and_four_byte_lengths() -> None:
    params = {"SCRIPT_FILENAME": "/srv/a.php", "LONG": "x" * 300, "E": "", "N" * 200: "v"}
    assert decode_params(encode_params(params)) == params
    encoded = encode_params({"LONG": "x" * 300})
    assert encoded[0] == 4
    assert encoded[1] & 0x80


def test_truncated_params_are_malformed() -> None:
    data = encode_params({"NAME": "value"})
    with pytest.raises(MalformedRecord):
        decode_params(data[:-2])
    with pytest.raises(MalformedRecord):
        decode_params(bytes([0x80, 0, 0]))


def test_records_are_padded_to_eight_bytes_and_split_at_64k() -> None:
    rec = encode_record(STDOUT, b"abc")
    assert len(rec) % 8 == 0
    stream = encode_stream(STDOUT, b"x" * 70000)
    records = RecordDecoder().feed(stream)
    assert [len(r.content) for r in records] == [65535, 70000 - 65535, 0]


def test_decoder_reassembles_records_fed_byte_by_byte() -> None:
    data = encode_record(STDOUT, b"hello") + encode_record(STDERR, b"oops") + end_request()
    decoder, got = RecordDecoder(), []
    for i in range(len(data)):
        got.extend(decoder.feed(data[i : i + 1]))
    assert [r.type for r in got] == [STDOUT, STDERR, END_REQUEST]
    assert [r.content for r in got[:2]] == [b"hello", b"oops"]
    assert decoder.pending == 0


def test_a_record_with_the_wrong_version_is_malformed() -> None:
    with pytest.raises(MalformedRecord, match="version 83, expected 1: not a FastCGI server"):
        RecordDecoder().feed(b"SSH-2.0-OpenSSH_9.2\r\n")


def test_an_http_answer_is_named_as_such() -> None:
    with pytest.raises(MalformedRecord, match="answered HTTP, not FastCGI: is this the web server's port"):
        RecordDecoder().feed(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def test_cgi_output_status_and_headers_are_parsed() -> None:
    status, headers, body = parse_cgi_output(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
    assert (status, headers["content-type"], body) == (404, "text/plain", b"nope")
    assert parse_cgi_output(b"X-Powered-By: PHP\n\nok")[0] == 200


@pytest.mark.parametrize("raw", [b"no header block", b"Status: abc\r\n\r\n", b"bad line\r\n\r\n"])
def test_malformed_cgi_output_is_rejected(raw: bytes) -> None:
    with pytest.raises(MalformedRecord):
        parse_cgi_output(raw)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(tmp_path: Path, reply: bytes | None) -> tuple[asyncio.AbstractServer, str]:
    """A unix-socket server that reads the request and answers `reply` (None: never answers)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        if reply is None:
            await reader.read()  # hold the connection until the client gives up
        else:
            writer.write(reply)
            await writer.drain()
        writer.close()

    sock = tmp_path / "fake.sock"
    server = await asyncio.start_unix_server(handle, path=str(sock))
    return server, f"unix:{sock}"


async def run(tmp_path: Path, reply: bytes | None, read_timeout: float = 2.0) -> fastcgi.Response:
    server, address = await serve(tmp_path, reply)
    async with server:
        return await fastcgi.request(address, {"SCRIPT_FILENAME": "/x.php"}, read_timeout=read_timeout)


async def test_response_with_stdout_and_stderr_is_returned(tmp_path: Path) -> None:
    reply = encode_stream(STDOUT, b"Content-Type: text/plain\r\n\r\nhi") + encode_record(STDERR, b"warn")
    resp = await run(tmp_path, reply + end_request(app_status=3))
    assert (resp.status, resp.body, resp.stderr, resp.app_status) == (200, b"hi", b"warn", 3)
    assert resp.content_type == "text/plain"


@pytest.mark.parametrize(("status", "text"), [(OVERLOADED, "overloaded"), (UNKNOWN_ROLE, "responder role"),
                                              (fastcgi.CANT_MPX_CONN, "multiplex")])
async def test_protocol_status_becomes_a_clear_error(tmp_path: Path, status: int, text: str) -> None:
    with pytest.raises(fastcgi.FastCGIProtocolStatus, match=text):
        await run(tmp_path, end_request(protocol_status=status))


async def test_connection_closed_before_end_request_is_malformed(tmp_path: Path) -> None:
    with pytest.raises(MalformedRecord, match="before END_REQUEST"):
        await run(tmp_path, encode_record(STDOUT, b"Status: 200\r\n\r\npartial"))


async def test_short_end_request_body_is_malformed(tmp_path: Path) -> None:
    with pytest.raises(MalformedRecord, match="END_REQUEST body"):
        await run(tmp_path, HEADER.pack(1, END_REQUEST, 1, 4, 4) + struct.pack(">I", 0) + b"\0" * 4)


async def test_unexpected_record_type_is_malformed(tmp_path: Path) -> None:
    with pytest.raises(MalformedRecord, match="unexpected record type 9"):
        await run(tmp_path, encode_record(9, b"") + end_request())


async def test_silent_server_times_out_after_connecting(tmp_path: Path) -> None:
    with pytest.raises(fastcgi.FastCGITimeout, match=r"no complete response within 0\.2s"):
        await run(tmp_path, None, read_timeout=0.2)


async def test_missing_socket_is_a_connect_error(tmp_path: Path) -> None:
    with pytest.raises(fastcgi.FastCGIConnectError, match="cannot connect"):
        await fastcgi.request(f"unix:{tmp_path / 'none.sock'}", {})
