"""Benchmark: 1,000 webhook POSTs of the same alert, 50 at a time, against a real cachewarden app.

Targets: exactly one heal run, p99 acknowledgement under 50 ms, no error responses.
Run: python bench/bench_heal.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from exporter.app import create_app
from exporter.config import parse

TOKEN = "bench-token-for-a-private-server"  # noqa: S105 - a throwaway token, long enough to be accepted
P99_TARGET_MS = 50.0


def make_app_dir(root: Path) -> None:
    views = root / "resources" / "views"
    compiled = root / "storage" / "framework" / "views"
    views.mkdir(parents=True)
    compiled.mkdir(parents=True)
    for i in range(200):
        source = views / f"v{i}.blade.php"
        source.write_text(f"view {i}")
        name = hashlib.sha1(f"v2{source}".encode()).hexdigest()  # noqa: S324 - Laravel's file name
        (compiled / f"{name}.php").write_text(f"view {i}<?php /**PATH {source} ENDPATH**/ ?>")
    gone = views / "gone.blade.php"
    orphan = compiled / (hashlib.sha1(f"v2{gone}".encode()).hexdigest() + ".php")  # noqa: S324
    orphan.write_text(f"x<?php /**PATH {gone} ENDPATH**/ ?>")
    old = time.time() - 3600
    os.utime(orphan, (old, old))


def serve(tmp: str, port_out: Connection) -> None:
    """The sidecar, in its own process as in production, so the load generator does not share its loop."""
    # The audit trail is written as in production (one JSON line per request), into a file rather
    # than over the benchmark's own output.
    log_fd = os.open(Path(tmp) / "audit.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 2)
    root = Path(tmp) / "shop"
    token = Path(tmp) / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)  # a token file others can read is refused, as ssh refuses such a key
    config = parse({"laravel": [{"name": "shop", "root": str(root)}],
                    "heal": {"token_file": str(token)}})

    async def run() -> None:
        runner = web.AppRunner(create_app(config, run_collectors=False), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.send(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()  # until the benchmark terminates this process

    asyncio.run(run())


Measured = tuple[list[float], int, dict[str, int], list[Any]]


async def load(port: int, requests: int, concurrency: int) -> Measured:
    body = json.dumps({"version": "4", "status": "firing", "receiver": "cachewarden", "alerts": [{
        "status": "firing", "labels": {"alertname": "CachewardenViewsOrphaned", "target": "shop"},
        "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "bench"}]})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    errors = 0
    decisions: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)
    url = f"http://127.0.0.1:{port}/heal"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one() -> None:
            nonlocal errors
            async with sem:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    answer = await r.json()
                latencies.append((time.perf_counter() - started) * 1000)
                if r.status != 200:
                    errors += 1
                    return
                for d in answer["decisions"]:
                    decisions[d["decision"]] = decisions.get(d["decision"], 0) + 1

        await asyncio.gather(*(one() for _ in range(requests)))

        async def finished() -> list[Any] | None:
            async with session.get(url, headers=headers) as r:
                runs: list[Any] = (await r.json())["runs"]
            return runs if all(run["state"] == "finished" for run in runs) else None

        deadline = time.monotonic() + 30
        runs = await finished()
        while runs is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            runs = await finished()
    return latencies, errors, decisions, runs or []


def main(requests: int, concurrency: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        make_app_dir(Path(tmp) / "shop")
        receive, send = ctx.Pipe(duplex=False)
        server = ctx.Process(target=serve, args=(tmp, send), daemon=True)
        server.start()
        try:
            if not receive.poll(30):
                print("the server did not start within 30 s, FAIL")
                return 1
            port = receive.recv()
            latencies, errors, decisions, runs = asyncio.run(load(port, requests, concurrency))
        finally:
            server.terminate()
            server.join(10)

    latencies.sort()
    p99 = latencies[max(0, math.ceil(len(latencies) * 0.99) - 1)]
    checks = [
        (f"heal runs: measured {len(runs)}, target 1", len(runs) == 1),
        (f"p99 acknowledgement: measured {p99:.1f} ms, target < {P99_TARGET_MS:g} ms", p99 < P99_TARGET_MS),
        (f"error responses: measured {errors}, target 0", errors == 0),
        (f"run result: measured {runs[0]['result'] if runs else None}, target verified",
         bool(runs) and runs[0]["result"] == "verified"),
    ]
    print(f"{requests} POSTs, {concurrency} concurrent; decisions {decisions}; "
          f"p50 {latencies[len(latencies) // 2]:.1f} ms, max {latencies[-1]:.1f} ms")
    for line, ok in checks:
        print(f"{line}, {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    sys.exit(main(args.requests, args.concurrency))
