"""Running a PHP agent script inside PHP-FPM, the way cachetool does.

OPcache lives in FPM's shared memory, so status and fixes must run inside FPM. For each run the
script (envelope.php + one action file from exporter/php/agent/) is written into the target's
agent_dir under a random name, mode 0644, with the SHA-256 of a fresh random token baked in. It is
requested over FastCGI with the token in the request body (never the URL, which ends up in logs), and
deleted afterwards whatever happened. The script answers a JSON envelope {ok, result, errors}.
A random name per run also matters for correctness: with validate_timestamps=0, rewriting one fixed
file would keep running its first cached version, token included.

The endpoint lock is released when the client gives up, but FPM may still be running the request: PHP
notices a closed connection only when it writes. So the script is told the client's timeout and calls
set_time_limit() with it. That bounds CPU time only (on Linux PHP does not count time spent waiting, in
sleep or I/O), so an agent run blocked on a lock may still hold a worker a little after cachewarden
moved on; the pool's request_terminate_timeout is the wall-clock bound for that residual case.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from exporter.php import fastcgi
from exporter.php.endpoint import FpmEndpoint

ACTIONS = ("status", "invalidate", "reset", "revision", "environment")
_ERR_SNIPPET = 300


@dataclass(frozen=True, slots=True)
class AgentReply:
    result: Any
    warnings: list[str]  # PHP warnings raised during the run, e.g. by a restricted OPcache API


class AgentError(Exception):
    """The agent ran but did not produce a usable answer."""


@cache
def _source(name: str) -> str:
    return (resources.files("exporter.php") / "agent" / f"{name}.php").read_text(encoding="utf-8")


def compose_script(action: str, token: str) -> str:
    """The file written for one run: the envelope, then the action's body."""
    if action not in ACTIONS:
        raise ValueError(f"unknown agent action {action!r}")
    return compose_source(_source(action), token)


def compose_source(script: str, token: str) -> str:
    """The envelope (token check, JSON answer), then `script`'s body."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    envelope = _source("envelope").replace("@TOKEN_SHA256@", digest)
    return envelope.rstrip() + "\n" + script.removeprefix("<?php")


def _write_script(agent_dir: Path, text: str) -> tuple[int, Path]:
    """Write the run's script; returns a descriptor of agent_dir (for `_remove`) and the script's path.

    Created and later removed relative to one descriptor of the directory, so the file removed is
    the one written even if a component of agent_dir's path is swapped in between.
    """
    name = f"cachewarden-{secrets.token_hex(16)}.php"
    try:
        dir_fd = os.open(agent_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise AgentError(
            f"agent_dir {agent_dir}: cannot write agent script: {exc.strerror or exc}; create it, "
            "writable by cachewarden, readable by FPM's user"
        ) from None
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=dir_fd)
    except OSError as exc:
        os.close(dir_fd)
        raise AgentError(
            f"agent_dir {agent_dir}: cannot write agent script: {exc.strerror or exc}; create it, "
            "writable by cachewarden, readable by FPM's user"
        ) from None
    try:
        os.fchmod(fd, 0o644)  # the umask must not make it unreadable to FPM's user
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return dir_fd, agent_dir / name


def _remove(dir_fd: int, path: Path) -> None:
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def request_params(script: Path, body_length: int) -> dict[str, str]:
    name = "/" + script.name
    return {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "cachewarden",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": "POST",
        "SCRIPT_FILENAME": str(script),
        "SCRIPT_NAME": name,
        "REQUEST_URI": name,
        "DOCUMENT_URI": name,
        "DOCUMENT_ROOT": str(script.parent),
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(body_length),
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "cachewarden",
    }


class Agent:
    """Runs agent actions on one FPM target."""

    def __init__(self, endpoint: FpmEndpoint, agent_dir: Path, *, timeout: float) -> None:
        self.endpoint = endpoint
        self.agent_dir = agent_dir
        self.timeout = timeout

    async def run(self, action: str, args: dict[str, Any] | None = None) -> AgentReply:
        """The action's answer; raises AgentError or fastcgi.FastCGIError when there is none."""
        if action not in ACTIONS:
            raise ValueError(f"unknown agent action {action!r}")
        return await self.run_source(action, _source(action), args)

    async def run_source(self, name: str, script: str, args: dict[str, Any] | None = None) -> AgentReply:
        """Run a PHP script body (`<?php …`) inside the envelope; `name` only labels errors."""
        token = secrets.token_urlsafe(32)
        text = compose_source(script, token)
        body = json.dumps({"token": token, "args": args or {}, "time_limit": self.timeout}).encode()
        dir_fd, path = await asyncio.to_thread(_write_script, self.agent_dir, text)
        try:
            resp = await self.endpoint.request(
                request_params(path, len(body)), body, read_timeout=self.timeout
            )
        finally:
            await asyncio.to_thread(_remove, dir_fd, path)
        return parse_envelope(name, resp)


def parse_envelope(action: str, resp: fastcgi.Response) -> AgentReply:
    try:
        envelope = json.loads(resp.body)
    except ValueError:
        stderr = resp.stderr.decode("utf-8", "replace")[:_ERR_SNIPPET]
        raise AgentError(
            f"agent {action}: HTTP {resp.status}, not a JSON answer"
            + (f"; FPM stderr: {stderr}" if stderr else "")
        ) from None
    if not isinstance(envelope, dict) or "ok" not in envelope:
        raise AgentError(f"agent {action}: answer is not an {{ok, result, errors}} envelope")
    if not envelope["ok"]:
        errors = "; ".join(str(e) for e in envelope.get("errors") or [])[:_ERR_SNIPPET]
        raise AgentError(f"agent {action}: HTTP {resp.status}: {errors or 'failed'}")
    warnings = [str(e) for e in envelope.get("errors") or []]
    return AgentReply(envelope.get("result"), warnings)

