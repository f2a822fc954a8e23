"""A private redis-server on a free port, which a test may freeze (SIGSTOP) and thaw (SIGCONT).

A frozen Redis is the hard failure for a client: connections still open (the kernel accepts them) and
commands are still sent, but no answer comes, and what was sent is applied when the server resumes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.support.processes import check_alive, stop_process
from tests.support.wait import free_port, wait_for

# The shared server scripts/start-services runs; tests keep to keys of their own there.
SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"

class PrivateRedis:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"redis://127.0.0.1:{port}/0"

    def client(self) -> redis.Redis:
        """A synchronous client with a short timeout, for the test's own looks at the server."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def answers(self) -> bool:
        check_alive(self.proc, self.log, "redis-server")
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()


@contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    """Start redis-server (no persistence) on a free port in `workdir`; stopped, thawed first, on exit."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = PrivateRedis(proc, port, log)
    try:
        wait_for(server.answers, timeout=15, message="the test's redis-server answers")
        yield server
    finally:
        if proc.poll() is None:
            server.thaw()  # a stopped process would not act on SIGTERM
        stop_process(proc)
