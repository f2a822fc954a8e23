"""Running heal scripts inside a PHP-FPM pool, with the same envelope and token scheme as the agent.

`exporter.php.agent.Agent` runs the fixed OPcache actions; a view compile needs a script of its own
(exporter/heal/php/compile_views.php), which is wrapped here in the agent's envelope, written to the
pool's agent_dir under a random name for one request and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from exporter.collectors.base import Collector
from exporter.collectors.fpm import FpmCollector
from exporter.collectors.opcache import OpcacheCollector
from exporter.config import PhpFpmTarget
from exporter.php.agent import Agent, parse_envelope, request_params
from exporter.php.endpoint import FpmEndpoint


@cache
def _envelope() -> str:
    return (resources.files("exporter.php") / "agent" / "envelope.php").read_text(encoding="utf-8")


def compose(script: str, token: str) -> str:
    digest = hashlib.sha256(token.encode()).hexdigest()
    return _envelope().replace("@TOKEN_SHA256@", digest).rstrip() + "\n" + script.removeprefix("<?php")


def _write(agent_dir: Path, text: str) -> Path:
    path = agent_dir / f"cachewarden-{secrets.token_hex(16)}.php"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)  # FPM's user must be able to read it whatever our umask is
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def fpm_endpoints(collectors: Iterable[Collector]) -> dict[str, FpmEndpoint]:
    """The endpoint each PHP-FPM target's collectors share, by target name."""
    out: dict[str, FpmEndpoint] = {}
    for c in collectors:
        if isinstance(c, FpmCollector):
            out.setdefault(c.target, c.endpoint)
        elif isinstance(c, OpcacheCollector):
            out.setdefault(c.target, c.agent.endpoint)
    return out


class HealFpm:
    """One endpoint per pool, so the heal's own requests to a pool go one at a time.

    `shared` holds the collectors' endpoints: the heal borrows the same object (and so the same lock)
    the FPM and OPcache collectors use, so cachewarden as a whole never takes two workers of a pool.
    """

    def __init__(self, shared: dict[str, FpmEndpoint] | None = None) -> None:
        self._endpoints: dict[str, FpmEndpoint] = dict(shared or {})

    def endpoint(self, pool: PhpFpmTarget) -> FpmEndpoint:
        if pool.name not in self._endpoints:
            self._endpoints[pool.name] = FpmEndpoint(pool.address, connect_timeout=pool.connect_timeout)
        return self._endpoints[pool.name]

    def agent(self, pool: PhpFpmTarget, timeout: float) -> Agent:
        return Agent(self.endpoint(pool), pool.agent_dir, timeout=timeout)

    async def run_script(self, pool: PhpFpmTarget, script: str, args: dict[str, Any],
                         time_limit: float) -> Any:
        """The `result` of a heal script run inside `pool`; raises AgentError or FastCGIError."""
        token = secrets.token_urlsafe(32)
        body = json.dumps({"token": token, "args": args}).encode()
        path = await asyncio.to_thread(_write, pool.agent_dir, compose(script, token))
        try:
            resp = await self.endpoint(pool).request(request_params(path, len(body)), body,
                                                     read_timeout=time_limit)
        finally:
            await asyncio.to_thread(_remove, path)
        return parse_envelope("heal", resp).result
