"""`cachewarden serve` under a connection flood, with systemd's default-sized descriptor table.

A real serve process runs with a low RLIMIT_NOFILE (set in the child before exec) and collects a
Laravel view tree, a private php-fpm8.2 pool with its OPcache, and the Redis on 127.0.0.1:6379 every
second. The test holds a few hundred slow
connections against it, each trickling an unfinished request header and reopened whenever the server
closes it, and scrapes /metrics meanwhile: every scrape is answered, the collectors stay up and the log
stays a few lines long.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import phpfpm
from tests.support.phpfpm import FpmFactory
from tests.support.processes import check_alive, stop_process
from tests.support.wait import free_port, wait_for

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

ROOT = Path(__file__).resolve().parents[2]
NOFILE = 256  # small enough for a flood the test can hold; systemd's default is 1024
SLOW_CONNECTIONS = 600  # well past the descriptor table
FLOOD_SECONDS = 8.0
LOG_BOUND = 16_000  # bytes for the whole run: start-up lines and a few rate-limited warnings


@dataclass
class Served:
    url: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    def scrape(self, timeout: float = 3.0) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=timeout) as resp:  # noqa: S310
            assert resp.status == 200
            return str(resp.read().decode())


def _low_nofile(soft: int = NOFILE, hard: int | None = None) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft if hard is None else hard))
    return preexec


def laravel_app(root: Path, views: int = 20) -> Path:
    source_dir, compiled_dir = root / "resources" / "views", root / "storage" / "framework" / "views"
    source_dir.mkdir(parents=True)
    compiled_dir.mkdir(parents=True)
    for i in range(views):
        source = source_dir / f"page{i}.blade.php"
        source.write_text(f"<p>{i}</p>\n")
        (compiled_dir / f"{i:040x}.php").write_text(f"<p>{i}</p>\n<?php /**PATH {source} ENDPATH**/ ?>")
        os.utime(source, (time.time() - 3600, time.time() - 3600))
    return root


def redis_available() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


@contextlib.contextmanager
def serve(tmp_path: Path, config: dict[str, object], listen: str | None = None,
          env: dict[str, str] | None = None, nofile: int = NOFILE, hard: int | None = None
          ) -> Iterator[Served]:
    port = free_port()
    listen = (listen or "127.0.0.1:{port}").format(port=port)
    config_file = tmp_path / "cachewarden.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--config.file", str(config_file),
             "--web.listen-address", listen],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=_low_nofile(nofile, hard),
            env={**os.environ, **(env or {})})
    served = Served(f"http://127.0.0.1:{port}", port, log, proc)
    try:
        wait_for(lambda: check_alive(proc, log) and served.scrape(), timeout=30,
                 message="cachewarden serve answering /metrics")
        yield served
    finally:
        stop_process(proc)


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, _, value = line.rpartition(" ")
            got = ",".join(sorted(series[len(name) + 1:-1].split(",")))
            if all(part in got.split(",") for part in wanted.split(",") if part):
                return float(value)
    return None


class SlowClients:
    """Connections each sending a byte of an unfinished request header now and then, reopened when closed."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.socks: list[socket.socket | None] = [None] * count
        self.started = [False] * count
        self.reopened = 0

    def _open(self) -> socket.socket | None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return None
        return s

    def tick(self) -> None:
        for i, s in enumerate(self.socks):
            if s is not None and not self._alive(s):
                s.close()
                s, self.socks[i] = None, None
                self.reopened += 1
            if s is None:
                self.socks[i], self.started[i] = self._open(), False
                continue
            with contextlib.suppress(OSError):
                s.send(b"a" if self.started[i] else b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                self.started[i] = True

    @staticmethod
    def _alive(s: socket.socket) -> bool:
        try:
            return s.recv(1024) != b""
        except BlockingIOError:
            return True
        except OSError as exc:
            return exc.errno in (errno.EAGAIN, errno.EINPROGRESS)

    def close(self) -> None:
        for s in self.socks:
            if s is not None:
                s.close()


COLLECTORS = {"views": "shop", "redis": "cache", "fpm": "www", "opcache": "www"}


def every_collector(tmp_path: Path, php_fpm: FpmFactory) -> dict[str, object]:
    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379 (scripts/start-services starts one)")
    phpfpm.require_fpm()
    app = laravel_app(tmp_path / "shop")
    fpm = php_fpm()
    return {
        "collectors": {kind: {"interval": "1s"} for kind in COLLECTORS},
        "laravel": [{"name": "shop", "root": str(app)}],
        "redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0"}],
        "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                     "pool_config": str(fpm.pool_config), "connect_timeout": "200ms",
                     "status_timeout": "500ms"}],
        "web": {"read_header_timeout": "2s"},
    }


def refused(tmp_path: Path, config: dict[str, object], nofile: int) -> subprocess.CompletedProcess[str]:
    config_file = tmp_path / "refused.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config.file", str(config_file),
         "--web.listen-address", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, cwd=ROOT, preexec_fn=_low_nofile(nofile), timeout=60, check=False)


def smallest_table(tmp_path: Path, config: dict[str, object]) -> int:
    """The descriptor table serve asks for when refused: the least it starts with for `config`."""
    proc = refused(tmp_path, config, 16)
    found = re.search(r"raise it to at least (\d+)", proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert found, proc.stderr
    return int(found.group(1))


# The smallest table these collectors start with, and a roomier one.
@pytest.mark.parametrize("table", ["smallest", "256"])
def test_a_slow_connection_flood_under_a_small_descriptor_table_leaves_scrapes_and_collectors_working(
        tmp_path: Path, php_fpm: FpmFactory, table: str) -> None:
    config = every_collector(tmp_path, php_fpm)
    nofile = smallest_table(tmp_path, config) if table == "smallest" else int(table)
    with serve(tmp_path, config, nofile=nofile) as served:
        wait_for(lambda: all(metric(served.scrape(), "cachewarden_collector_up", collector=kind) == 1.0
                             for kind in COLLECTORS), timeout=20, message="every collector up")
        before = served.scrape()
        clients = SlowClients(served.port, SLOW_CONNECTIONS)
        scrapes: list[str | Exception] = []
        try:
            deadline = time.monotonic() + FLOOD_SECONDS
            while time.monotonic() < deadline:
                clients.tick()
                try:
                    scrapes.append(served.scrape())
                except Exception as exc:  # collected and asserted on below
                    scrapes.append(exc)
                time.sleep(0.2)  # the flood's pace, not a wait for a condition
            after = served.scrape()
        finally:
            clients.close()
        check_alive(served.proc, served.log)
    failed = [s for s in scrapes if isinstance(s, Exception)]
    assert len(scrapes) >= 5
    assert not failed, f"{len(failed)} of {len(scrapes)} scrapes failed, first: {failed[0]!r}"
    for collector, target in COLLECTORS.items():
        assert metric(after, "cachewarden_collector_up", collector=collector, target=target) == 1.0
        assert (metric(after, "cachewarden_collector_errors_total", collector=collector, target=target)
                == metric(before, "cachewarden_collector_errors_total", collector=collector, target=target))
    assert clients.reopened > SLOW_CONNECTIONS, "the server never closed a slow connection"
    output = served.log.read_bytes()
    assert len(output) < LOG_BOUND, output[-3000:].decode(errors="replace")
    assert b"Traceback" not in output


@pytest.mark.parametrize("nofile", [16, 24])
def test_a_descriptor_table_too_small_for_the_collectors_refuses_to_start_naming_ulimit(
        tmp_path: Path, php_fpm: FpmFactory, nofile: int) -> None:
    # Under `ulimit -n 24` every scrape timed out behind a flood, under 16 the views walk failed with
    # EMFILE, and start said nothing.
    proc = refused(tmp_path, every_collector(tmp_path, php_fpm), nofile)
    assert proc.returncode == 2, proc.stderr
    assert (f"cannot serve: RLIMIT_NOFILE (ulimit -n) is {nofile}, too small to serve: "
            in proc.stderr)
    assert "for the collectors (discovery 1 x 1, fpm 2 x 1, " in proc.stderr
    assert "opcache 4 x 1, redis 1 x 1, views 4 x 1)" in proc.stderr
    assert "LimitNOFILE=" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unfinished_headers_sent_once_leave_every_scrape_answered_at_the_smallest_table(
        tmp_path: Path, php_fpm: FpmFactory) -> None:
    # The flood as it was found: 300 connections, each an unfinished header and nothing more.
    config = every_collector(tmp_path, php_fpm)
    with serve(tmp_path, config, nofile=smallest_table(tmp_path, config)) as served:
        flood: list[socket.socket] = []
        try:
            for _ in range(300):  # the kernel completes each handshake into the listen backlog
                flood.append(socket.create_connection(("127.0.0.1", served.port), timeout=5))
                with contextlib.suppress(OSError):  # reset already: the server made room
                    flood[-1].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            answered = [served.scrape() for _ in range(10)]
        finally:
            for s in flood:
                s.close()
        check_alive(served.proc, served.log)
    for text in answered:
        assert metric(text, "cachewarden_http_max_connections") == 8
    assert all(metric(answered[-1], "cachewarden_collector_up", collector=kind) == 1.0 for kind in COLLECTORS)


def test_the_soft_limit_is_raised_to_the_hard_one_at_start(tmp_path: Path) -> None:
    assert 4 * NOFILE == 1024
    with serve(tmp_path, {}, nofile=NOFILE, hard=4 * NOFILE) as served:
        text = served.scrape()
    # 1024: a quarter kept, then a batch of 16 accepts and one spare.
    assert metric(text, "cachewarden_http_max_connections") == 1024 - 256 - 16 - 1
    assert (f"raised the soft RLIMIT_NOFILE from {NOFILE} to {4 * NOFILE}; processes the heal starts "
            f"get {NOFILE}") in served.log.read_text()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_a_request_header_that_never_ends_is_closed_after_read_header_timeout(tmp_path: Path) -> None:
    with serve(tmp_path, {"web": {"read_header_timeout": "1s"}}) as served:
        with socket.create_connection(("127.0.0.1", served.port)) as slow:
            slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            opened = time.monotonic()
            slow.setblocking(False)
            wait_for(lambda: closed_by_server(slow), timeout=5, message="the slow connection closed")
            assert time.monotonic() - opened >= 0.9
        # A scrape taking its time between requests is not a slow header: it is answered every time.
        with socket.create_connection(("127.0.0.1", served.port)) as keep_alive:
            for _ in range(2):
                keep_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert keep_alive.recv(4096).startswith(b"HTTP/1.1 200")
        text = served.scrape()
    assert metric(text, "cachewarden_http_connections_closed_total", reason="header_timeout") == 1.0
    # Nothing to collect: a quarter of the table kept, then a batch of accepts and one spare.
    assert metric(text, "cachewarden_http_max_connections") == NOFILE - 64 - (NOFILE - 64) // 20 - 1


def test_a_heal_body_that_trickles_in_is_refused_after_read_body_timeout(tmp_path: Path) -> None:
    token = "t" * 40
    config = {"web": {"read_body_timeout": "1s"}, "heal": {"token_env": "LIMITS_TEST_TOKEN"}}
    with (serve(tmp_path, config, env={"LIMITS_TEST_TOKEN": token}) as served,
          socket.create_connection(("127.0.0.1", served.port), timeout=10) as slow):
        slow.sendall(b"POST /heal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n{")
        started = time.monotonic()
        answer = slow.recv(4096)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"web.read_body_timeout" in answer
    assert 0.9 <= took < 5


@pytest.mark.parametrize("sent", [b"", b'{"ve'])
def test_a_client_that_hangs_up_mid_body_is_counted_as_such_not_as_a_server_error(
        tmp_path: Path, sent: bytes) -> None:
    token = "t" * 40
    config = {"heal": {"token_env": "LIMITS_TEST_TOKEN"}}
    with serve(tmp_path, config, env={"LIMITS_TEST_TOKEN": token}) as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as gone:
            gone.sendall(b"POST /heal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 30\r\nAuthorization: Bearer " + token.encode()
                         + b"\r\n\r\n" + sent)
        closed = wait_for(lambda: metric(text := served.scrape(), "cachewarden_http_errors_total",
                                         status="499") == 1.0 and text, timeout=20,
                          message="the hang-up counted as a client abort")
        log = served.log.read_text()
    assert metric(closed, "cachewarden_http_errors_total", status="500") == 0.0
    assert " ERROR " not in log, log
    assert "Traceback" not in log, log
    assert "ConnectionResetError" not in log, log


def host_has_ipv6() -> bool:
    # The kernel lists IPv6 addresses here only while IPv6 is on (absent with ipv6.disable=1).
    path = Path("/proc/net/if_inet6")
    return path.exists() and bool(path.read_text().strip())


def test_listening_on_the_ipv6_unspecified_address_answers_ipv4_and_ipv6_clients(tmp_path: Path) -> None:
    # `[::]:PORT` is what the configuration's own error message suggests for IPv6: it must not lock
    # out every IPv4 client, as asyncio's IPv6-only default would.
    with serve(tmp_path, {}, listen="[::]:{port}") as served:
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/healthz", timeout=5) as v4:
            assert v4.status == 200
        if host_has_ipv6():
            with urllib.request.urlopen(f"http://[::1]:{served.port}/healthz", timeout=5) as v6:
                assert v6.status == 200
    assert f"listening on [::]:{served.port}" in served.log.read_text()
