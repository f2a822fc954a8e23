"""Benchmark: scrapes while 1,100 slow connections flood `cachewarden serve` under `ulimit -n 1024`.

The attack that once made every scrape time out and wrote 60 MB of tracebacks in 35 s: 1,100
connections that each trickle an unfinished request header, reopened as soon as the server closes them,
against systemd's default descriptor table. Meanwhile a scraper fetches /metrics twice a second.

Targets: every scrape answered, p99 scrape time under 1 s, the views collector up throughout, the
server's descriptors within its table, under 16 KB of log.
Run: python bench/bench_flood.py [--connections N] [--seconds S] [--nofile N]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
P99_TARGET_S = 1.0
LOG_TARGET_BYTES = 16_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_app(root: Path) -> None:
    views, compiled = root / "resources" / "views", root / "storage" / "framework" / "views"
    views.mkdir(parents=True)
    compiled.mkdir(parents=True)
    for i in range(500):
        source = views / f"v{i}.blade.php"
        source.write_text(f"view {i}")
        os.utime(source, (time.time() - 3600, time.time() - 3600))
        (compiled / f"{i:040x}.php").write_text(f"view {i}<?php /**PATH {source} ENDPATH**/ ?>")


def scrape(url: str) -> tuple[float, str | None]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a loopback URL we built
            body = resp.read().decode()
    except OSError:
        return time.monotonic() - started, None
    return time.monotonic() - started, body


def views_up(body: str) -> bool:
    return 'cachewarden_collector_up{collector="views",target="shop"} 1.0' in body


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--nofile", type=int, default=1024)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 200), hard))

    with tempfile.TemporaryDirectory() as tmp:
        make_app(Path(tmp) / "shop")
        port = free_port()
        config = Path(tmp) / "cachewarden.yaml"
        config.write_text(f"collectors: {{views: {{interval: 1s}}}}\n"
                          f"laravel:\n  - name: shop\n    root: {tmp}/shop\n")
        log = Path(tmp) / "serve.log"
        nofile = args.nofile
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "exporter", "serve", "--config.file", str(config),
                 "--web.listen-address", f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT,
                cwd=ROOT, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            deadline = time.monotonic() + 30
            while not views_up(scrape(url)[1] or ""):
                if time.monotonic() > deadline or server.poll() is not None:
                    print("cachewarden serve did not come up", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            results: list[tuple[float, str | None]] = []
            stop = threading.Event()

            def scraper() -> None:
                while not stop.is_set():
                    results.append(scrape(url))
                    stop.wait(0.5)

            fds: list[int] = []
            thread = threading.Thread(target=scraper)
            thread.start()
            socks: list[socket.socket | None] = [None] * args.connections
            reopened = 0
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                for i, s in enumerate(socks):
                    if s is not None:
                        try:
                            alive = s.recv(64) != b""
                        except BlockingIOError:
                            alive = True
                        except OSError:
                            alive = False
                        if alive:
                            with contextlib.suppress(OSError):
                                s.send(b"a")
                            continue
                        s.close()
                        reopened += 1
                    s = socket.socket()
                    s.setblocking(False)
                    with contextlib.suppress(BlockingIOError, OSError):
                        s.connect(("127.0.0.1", port))
                    with contextlib.suppress(OSError):
                        s.send(b"GET / HTTP/1.1\r\nX-Slow: ")
                    socks[i] = s
                fds.append(len(os.listdir(f"/proc/{server.pid}/fd")))
                time.sleep(0.2)
            stop.set()
            thread.join()
            for s in socks:
                if s is not None:
                    s.close()
        finally:
            server.terminate()
            server.wait(timeout=20)
        log_bytes = log.stat().st_size

    times = [t for t, body in results if body is not None]
    answered, total = len(times), len(results)
    up = sum(1 for _, body in results if body is not None and views_up(body))
    p50, p99 = percentile(times, 50) if times else math.inf, percentile(times, 99) if times else math.inf
    ok = answered == total and p99 < P99_TARGET_S and up == answered and max(fds) <= nofile \
        and log_bytes < LOG_TARGET_BYTES
    print(f"{args.connections} slow connections for {args.seconds:g} s against ulimit -n {nofile} "
          f"(reopened {reopened} times after the server closed them)")
    print(f"scrapes answered: {answered}/{total} (target: all)")
    print(f"scrape time: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (target p99 < "
          f"{P99_TARGET_S * 1000:.0f} ms)")
    print(f"views collector up in {up}/{answered} scrapes (target: all)")
    print(f"server descriptors: peak {max(fds)} of {nofile}")
    print(f"log: {log_bytes} bytes (target < {LOG_TARGET_BYTES})")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
