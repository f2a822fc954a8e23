"""Who may call `/heal` and what they may send: token, address allowlist, body size and type.

Each guard answers with a `Refusal` (HTTP status, outcome label, a sentence) or None. The order is the
cheap-and-safe one: switched off, then address, then token, then the body, so an unauthenticated caller
never gets as far as making the server read a large body.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from exporter.text import display

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Refusal(Exception):
    status: int
    outcome: str  # the `outcome` label of cachewarden_heal_requests_total
    message: str

    def response(self) -> web.Response:
        return web.json_response({"status": "refused", "outcome": self.outcome, "error": self.message},
                                 status=self.status)


def parse_networks(cidrs: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def check_address(remote: str | None, allowed: Sequence[Network]) -> Refusal | None:
    if not allowed:
        return None
    try:
        addr = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return Refusal(403, "forbidden", "the caller's address is not in heal.allow_cidrs")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr in net for net in allowed):
        return None
    return Refusal(403, "forbidden", "the caller's address is not in heal.allow_cidrs")


def check_token(header: str | None, expected: str) -> Refusal | None:
    scheme, _, presented = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return Refusal(401, "unauthorized", "missing bearer token")
    # Constant time, so the response time tells nothing about how much of a guess was right.
    # aiohttp hands over undecodable header bytes as surrogates: give them back as the bytes they were.
    if not hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), expected.encode()):
        return Refusal(401, "unauthorized", "wrong bearer token")
    return None


async def read_json_body(request: web.Request, limit: int, seconds: float = 10.0) -> Any:
    """The decoded JSON body, refusing a wrong content type (415), an oversize body (413), one that takes
    longer than `seconds` to arrive (408) or bad JSON (400).

    The size is checked against Content-Length first and then while reading, so a lying or chunked
    request cannot make the server buffer more than `limit` bytes.
    """
    if request.content_type != "application/json":
        raise Refusal(415, "unsupported_media_type", "the body must be application/json")
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, "too_large", f"the body exceeds {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):  # a body sent a byte at a time must not hold the connection
            if request.content_length is not None:
                # The common case, read in one go: Content-Length was already checked against the limit.
                body += await request.content.read(request.content_length)
            async for chunk in request.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > limit:
                    raise Refusal(413, "too_large", f"the body exceeds {limit} bytes")
    except TimeoutError:
        raise Refusal(408, "bad_request", f"the body did not arrive within {seconds:g}s "
                      "(web.read_body_timeout)") from None
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except _RepeatedKey as exc:
        raise Refusal(400, "bad_request", f"a JSON object in the body repeats the key {exc.key}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refusal(400, "bad_request", "the body is not valid JSON") from None


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        shown = display(key)
        self.key = repr(shown if len(shown) <= 64 else shown[:64] + "…")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of a repeated key, other parsers the first: `{"status": "firing", "status":
    # "resolved"}` or two `target` labels would mean one thing to the sender and another here.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out
