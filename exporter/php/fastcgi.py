"""An asyncio FastCGI client: one responder request per connection, over a unix socket or TCP.

No maintained asyncio FastCGI client exists on PyPI (fcgi-client 0.0.1 is blocking, flup is 2018 and
server-oriented), hence this hand-written one. The client side of the protocol is small: a BEGIN_REQUEST,
the PARAMS stream, the STDIN stream, then STDOUT/STDERR records until END_REQUEST. Every way that can go
wrong (cannot connect, no answer in time, a protocol status other than "request complete", bytes that
are not FastCGI) becomes a `FastCGIError` subclass with a message that says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 2, 3, 4, 5, 6, 7
UNKNOWN_TYPE = 11
RESPONDER = 1
REQUEST_ID = 1  # one request per connection, so the id never needs to vary

HEADER = struct.Struct(">BBHHBx")  # version, type, request id, content length, padding length
BEGIN_BODY = struct.Struct(">HB5x")  # role, flags (0: the server closes the connection when done)
END_BODY = struct.Struct(">IB3x")  # application status, protocol status
MAX_CONTENT = 0xFFFF

REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE = 0, 1, 2, 3
_PROTOCOL_STATUS_TEXT = {
    CANT_MPX_CONN: "the server cannot multiplex connections",
    OVERLOADED: "the server is overloaded",
    UNKNOWN_ROLE: "the server does not support the responder role",
}


class FastCGIError(Exception):
    """A FastCGI request did not produce a response."""


class FastCGIConnectError(FastCGIError):
    """The socket refused or did not accept the connection in time."""


class FastCGITimeout(FastCGIError):
    """Connected, but the response did not arrive in time (e.g. every worker of the pool is busy)."""


class FastCGIProtocolStatus(FastCGIError):
    """The server ended the request with a protocol status other than REQUEST_COMPLETE."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(_PROTOCOL_STATUS_TEXT.get(status, f"unknown protocol status {status}"))


class MalformedRecord(FastCGIError):
    """The bytes received are not a valid FastCGI record stream."""


@dataclass(frozen=True, slots=True)
class Record:
    type: int
    request_id: int
    content: bytes


@dataclass(frozen=True, slots=True)
class Response:
    """A completed request: CGI status and headers parsed from STDOUT, the body, and STDERR."""

    status: int
    headers: dict[str, str]
    body: bytes
    stderr: bytes = b""
    app_status: int = 0

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


def encode_record(rtype: int, content: bytes = b"", request_id: int = REQUEST_ID) -> bytes:
    """One record (content up to 65535 bytes), padded to a multiple of 8 as the spec recommends."""
    if len(content) > MAX_CONTENT:
        raise ValueError("record content exceeds 65535 bytes")
    padding = -len(content) % 8
    return HEADER.pack(VERSION, rtype, request_id, len(content), padding) + content + b"\0" * padding


def encode_stream(rtype: int, data: bytes) -> bytes:
    """A whole stream: the data split into records, then the empty record that closes the stream."""
    chunks = [encode_record(rtype, data[i : i + MAX_CONTENT]) for i in range(0, len(data), MAX_CONTENT)]
    chunks.append(encode_record(rtype))
    return b"".join(chunks)


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n > 0x7FFFFFFF:
        raise ValueError("name or value longer than 2^31-1 bytes")
    return struct.pack(">I", n | 0x80000000)


def encode_params(params: Mapping[str, str]) -> bytes:
    """Name-value pairs with 1-byte (<128) or 4-byte lengths, as the PARAMS stream carries them."""
    out = bytearray()
    for name, value in params.items():
        n, v = name.encode(), value.encode()
        out += _encode_length(len(n)) + _encode_length(len(v)) + n + v
    return bytes(out)


def decode_params(data: bytes) -> dict[str, str]:
    """The inverse of `encode_params`; raises MalformedRecord on truncated input."""
    out: dict[str, str] = {}
    pos = 0

    def length() -> int:
        nonlocal pos
        if pos >= len(data):
            raise MalformedRecord("name-value pair truncated in its length")
        if data[pos] < 0x80:
            pos += 1
            return data[pos - 1]
        if pos + 4 > len(data):
            raise MalformedRecord("name-value pair truncated in its 4-byte length")
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        return int(n) & 0x7FFFFFFF

    while pos < len(data):
        n_len, v_len = length(), length()
        if pos + n_len + v_len > len(data):
            raise MalformedRecord("name-value pair longer than the data")
        name = data[pos : pos + n_len].decode("utf-8", "replace")
        value = data[pos + n_len : pos + n_len + v_len].decode("utf-8", "replace")
        out[name] = value
        pos += n_len + v_len
    return out


def encode_request(params: Mapping[str, str], stdin: bytes = b"") -> bytes:
    begin = encode_record(BEGIN_REQUEST, BEGIN_BODY.pack(RESPONDER, 0))
    return begin + encode_stream(PARAMS, encode_params(params)) + encode_stream(STDIN, stdin)


class RecordDecoder:
    """Incremental record parser: feed bytes as they arrive, take complete records out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Record]:
        self._buf += data
        records = []
        while len(self._buf) >= HEADER.size:
            version, rtype, request_id, length, padding = HEADER.unpack_from(self._buf)
            if version != VERSION:
                if self._buf.startswith(b"HTTP/"):
                    raise MalformedRecord("answered HTTP, not FastCGI: is this the web server's port?")
                raise MalformedRecord(f"record version {version}, expected {VERSION}: not a FastCGI server?")
            end = HEADER.size + length + padding
            if len(self._buf) < end:
                break
            records.append(Record(rtype, request_id, bytes(self._buf[HEADER.size : HEADER.size + length])))
            del self._buf[:end]
        return records

    @property
    def pending(self) -> int:
        """Bytes of an incomplete record still buffered."""
        return len(self._buf)


def parse_cgi_output(stdout: bytes) -> tuple[int, dict[str, str], bytes]:
    """Split CGI output into (status, lower-cased headers, body); `Status:` defaults to 200."""
    head, sep, body = stdout.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = stdout.partition(b"\n\n")
    if not sep:
        raise MalformedRecord("response has no CGI header block")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if not colon:
            raise MalformedRecord(f"malformed CGI header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    status_text = headers.get("status", "200")
    try:
        status = int(status_text.split()[0])
    except (ValueError, IndexError):
        raise MalformedRecord(f"malformed CGI Status header {status_text[:40]!r}") from None
    return status, headers, body


class _Collector:
    """Accumulates one request's STDOUT/STDERR until its END_REQUEST."""

    def __init__(self) -> None:
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.end: tuple[int, int] | None = None

    def take(self, records: Iterable[Record]) -> None:
        for rec in records:
            if self.end is not None:
                raise MalformedRecord("record received after END_REQUEST")
            if rec.type == STDOUT:
                self.stdout.append(rec.content)
            elif rec.type == STDERR:
                self.stderr.append(rec.content)
            elif rec.type == END_REQUEST:
                if rec.request_id != REQUEST_ID:
                    raise MalformedRecord(f"END_REQUEST for request id {rec.request_id}")
                if len(rec.content) != END_BODY.size:
                    raise MalformedRecord(f"END_REQUEST body of {len(rec.content)} bytes, expected 8")
                self.end = END_BODY.unpack(rec.content)
            elif rec.type == UNKNOWN_TYPE:
                raise MalformedRecord("the server did not understand a record type we sent")
            else:
                raise MalformedRecord(f"unexpected record type {rec.type}")


def parse_address(address: str) -> tuple[str, str | int]:
    """`unix:/path` -> ("unix", path); `host:port` -> (host, port)."""
    if address.startswith("unix:"):
        return "unix", address[5:]
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, where = parse_address(address)
    if host == "unix":
        return await asyncio.open_unix_connection(str(where))
    return await asyncio.open_connection(host, int(where))


async def request(
    address: str,
    params: Mapping[str, str],
    stdin: bytes = b"",
    *,
    connect_timeout: float = 2.0,
    read_timeout: float = 5.0,
) -> Response:
    """Send one responder request and return its parsed response.

    `read_timeout` bounds everything after the connection is accepted: sending, and waiting for the
    whole response. The kernel accepts connections into FPM's listen backlog even when every worker is
    busy or the pool is hung (a stopped master or workers), which is why either shows up as a
    FastCGITimeout rather than a FastCGIConnectError.
    """
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await _open(address)
    except TimeoutError:
        raise FastCGIConnectError(f"{address}: no connection within {connect_timeout:g}s") from None
    except OSError as exc:
        raise FastCGIConnectError(f"{address}: cannot connect: {exc.strerror or exc}") from None
    try:
        async with asyncio.timeout(read_timeout):
            writer.write(encode_request(params, stdin))
            await writer.drain()
            return await _read_response(reader)
    except TimeoutError:
        raise FastCGITimeout(
            f"{address}: no complete response within {read_timeout:g}s (every worker busy, "
            "a hung pool, or not a FastCGI server)"
        ) from None
    except MalformedRecord as exc:
        raise MalformedRecord(f"{address}: {exc}") from None
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise FastCGIError(f"{address}: connection lost: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> Response:
    decoder, acc = RecordDecoder(), _Collector()
    while acc.end is None:
        data = await reader.read(256 * 1024)
        if not data:
            raise MalformedRecord("connection closed before END_REQUEST")
        acc.take(decoder.feed(data))
    app_status, protocol_status = acc.end
    if protocol_status != REQUEST_COMPLETE:
        raise FastCGIProtocolStatus(protocol_status)
    status, headers, body = parse_cgi_output(b"".join(acc.stdout))
    return Response(status, headers, body, b"".join(acc.stderr), app_status)
