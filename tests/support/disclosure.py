"""Where a secret must never appear: everything cachewarden shows people or writes to its log.

`shown_to_people` gathers what one process shows; `hostile_requests` and `send_raw` make the
malformed HTTP requests that once made the HTTP layer quote header bytes back; `assert_nowhere` is
the one loop that checks every secret against every output, naming the output that leaked.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping

from exporter.report import build_report
from exporter.scheduler import Scheduler
from exporter.status_page import render_status_page


def shown_to_people(scheduler: Scheduler, log_text: str, *objects: object) -> list[str]:
    """The status page (first), the text and JSON report, the log, and the repr of `objects`."""
    report = build_report(scheduler.statuses())
    return [render_status_page(report, started_at=0), report.as_text(), str(report.as_dict()), log_text,
            *map(repr, objects)]


def hostile_requests(secret: str, host: str = "x") -> dict[str, bytes]:
    """Raw HTTP/1.1 requests, by name, each carrying `secret` where a parser error would quote it.

    The Authorization forms are how a real client sends a token it read from a file: curl with a
    CRLF token file sends a bare CR before the line's CRLF. The others put the secret in every other
    part of a request that an error message may echo: request line, header name, chunk size, body.
    """
    s = secret.encode()
    head = f"POST /heal HTTP/1.1\r\nHost: {host}\r\n".encode()
    json_type = b"Content-Type: application/json\r\n"
    return {
        "authorization with a trailing CR": head + b"Authorization: Bearer " + s + b"\r\r\n\r\n",
        "authorization with a NUL": head + b"Authorization: Bearer " + s + b"\x00\r\n\r\n",
        "authorization folded onto a second line": head + b"Authorization: Bearer\r\n " + s + b"\r\n\r\n",
        "a space before the colon": head + b"Authorization : Bearer " + s + b"\r\n\r\n",
        "authorization with a bare LF": head + b"Authorization: Bearer " + s + b"\n\r\n",
        "authorization with invalid UTF-8": head + b"Authorization: Bearer \xff" + s + b"\r\n\r\n",
        "an overlong header line": head + b"Authorization: Bearer " + s + b"x" * 9000 + b"\r\n\r\n",
        "a wrong token that is the secret": head + b"Authorization: Bearer " + s + b"\r\nContent-Length: 0"
                                            b"\r\n\r\n",
        "a header name with the secret": head + b"X-" + s + b" : 1\r\n\r\n",
        "the secret in the request line": b"POST /heal?" + s + b" HTTP/1.1 extra\r\n\r\n",
        "the secret as the method": s + b"( /heal HTTP/1.1\r\nHost: x\r\n\r\n",
        "the secret in the target": b"GET /heal/runs/" + s + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "the secret in the query": b"POST /heal?action=" + s + b"&target=" + s + b" HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 0\r\n\r\n",
        "the secret as a chunk size": head + json_type + b"Transfer-Encoding: chunked\r\n\r\n" + s
                                      + b"\r\n{}\r\n0\r\n\r\n",
        "the secret in a JSON body": head + json_type + b"Content-Length: " + str(len(s) + 4).encode()
                                     + b"\r\n\r\n[\"" + s + b"\"]",
        "the secret in a broken JSON body": head + json_type + b"Content-Length: " + str(len(s) + 2).encode()
                                            + b"\r\n\r\n{" + s + b"}",
        "the secret as the content type": head + b"Content-Type: " + s + b"\r\nContent-Length: 0\r\n\r\n",
        "the secret as the content length": head + b"Content-Length: 1" + s + b"\r\n\r\n",
    }


def send_raw(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` on a new connection and return the server's first answer (head and body).

    The connection stays open for writing: aiohttp drops a request whose sender has half-closed
    before it answered. The answer ends at Content-Length, or when the server closes.
    """
    with socket.create_connection(address, timeout=timeout) as conn:
        conn.sendall(data)
        answer = bytearray()
        try:
            while chunk := conn.recv(65536):
                answer += chunk
                head, sep, body = bytes(answer).partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                if sep and length and len(body) >= int(length.group(1)):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return bytes(answer)


def assert_nowhere(secrets: tuple[str, ...], shown: list[str] | Mapping[str, str | bytes]) -> None:
    """No secret in any output; `shown` may name each output (a mapping) so a failure says which."""
    named = list(shown.items()) if isinstance(shown, Mapping) else list(enumerate(shown))
    for secret in secrets:
        leaks = []
        for name, text in named:
            haystack = text if isinstance(text, str) else text.decode("utf-8", "replace")
            if secret in haystack:
                at = haystack.index(secret)
                leaks.append(f"{name}: …{haystack[max(0, at - 40):at]}<SECRET>…")
        assert not leaks, f"a secret was shown: {leaks}"
