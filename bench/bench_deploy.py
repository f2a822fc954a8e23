"""Benchmark: `cachewarden deploy` of a release of 2,000 views and 5,000 PHP files with 50 changed, while
16 clients request pages through PHP-FPM (OPcache with validate_timestamps=0, 8 workers).

Targets: prepare + activate + verify under 5 s; at most one FPM worker busy with cachewarden's work at
any time; p99 latency of the page requests during the deploy at most 1.5x their p99 without a deploy.

The deploy is the in-place kind (`git pull`): 50 classes and 50 views change under the app root, then
prepare (every view compiled atomically), activate (exactly the 50 changed scripts invalidated, from
the changed-file list) and verify run as `cachewarden deploy --phases prepare,activate,verify
--changed-files …` would run them. The clients run in their own process, as the web server's would;
cachewarden's FastCGI requests are counted in flight in this one.
Run: python bench/bench_deploy.py [--views N] [--scripts N] [--changed N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.collectors import build_collectors
from exporter.config import parse
from exporter.deploy.phases import Deployer, DeployRequest
from exporter.deploy.records import DeployMetrics
from exporter.heal.runner import HealRunner
from exporter.heal.store import MemoryStore
from exporter.php import fastcgi
from exporter.scheduler import Scheduler
from tests.support.phpfpm import Fpm, start_fpm
from tests.support.releases import Releases, expected, make_releases

SECONDS_TARGET = 5.0
WORKERS_TARGET = 1
P99_RATIO_TARGET = 1.5
CLIENTS = 16
LARAVEL_EXTENSIONS = {"20-laravel.ini": "extension=tokenizer.so\nextension=ctype.so\nextension=mbstring.so\n"}
WARM = """<?php
foreach (glob(__DIR__ . '/../app/Lib/*.php') as $f) { require_once $f; }
echo count(get_declared_classes());
"""


def params(root: Path, script: str) -> dict[str, str]:
    return {"GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "SCRIPT_FILENAME": str(root / script),
            "SCRIPT_NAME": "/" + script, "REQUEST_URI": "/", "QUERY_STRING": "",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}


def clients(address: str, root: str, seconds: float, out: Connection) -> None:
    """The web server's side, in its own process: CLIENTS loops, (start time, latency, ok) per request."""
    async def main() -> list[tuple[float, float, bool]]:
        rows: list[tuple[float, float, bool]] = []
        good = {expected(1).encode(), expected(2).encode()}
        stop = time.time() + seconds

        async def loop() -> None:
            while time.time() < stop:
                started = time.time()
                t0 = time.perf_counter()
                try:
                    resp = await fastcgi.request(address, params(Path(root), "public/index.php"),
                                                 connect_timeout=5, read_timeout=30)
                    ok = resp.status == 200 and resp.body in good
                except (OSError, fastcgi.FastCGIError):
                    ok = False
                rows.append((started, time.perf_counter() - t0, ok))

        await asyncio.gather(*(loop() for _ in range(CLIENTS)))
        return rows

    out.send(asyncio.run(main()))


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else float("nan")


class InFlight:
    """Counts cachewarden's FastCGI requests in flight (each one holds an FPM worker)."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0
        self.total = 0
        self._request = fastcgi.request

    async def request(self, *args: Any, **kwargs: Any) -> fastcgi.Response:
        self.now += 1
        self.total += 1
        self.max = max(self.max, self.now)
        try:
            return await self._request(*args, **kwargs)
        finally:
            self.now -= 1


def setup(rel: Releases, views: int, scripts: int) -> tuple[Path, Fpm]:
    root = rel.build(1, views=views, scripts=scripts, age=3600)
    (root / "public" / "warm.php").write_text(WARM)
    old = time.time() - 3600
    for path in (root / "app").rglob("*.php"):  # older than opcache.file_update_protection: cacheable
        os.utime(path, (old, old))
    fpm = start_fpm(rel.root / "fpm", opcache={
        "opcache.validate_timestamps": 0, "opcache.max_accelerated_files": 20000,
        "opcache.memory_consumption": 256}, conf_d=LARAVEL_EXTENSIONS,
        pool={"pm.max_children": 8, "request_terminate_timeout": 120})
    return root, fpm


def pull(root: Path, changed: int) -> list[str]:
    """What `git pull` does to the tree: `changed` classes and views rewritten; the diff's file list."""
    names = []
    for i in range(changed):
        (root / "app" / "Lib" / f"M{i}.php").write_text(f"<?php class M{i} {{ const V = 2; }}\n")
        (root / "resources" / "views" / "pages" / f"p{i}.blade.php").write_text(f"<div>page {i}, v2</div>")
        names += [f"app/Lib/M{i}.php", f"resources/views/pages/p{i}.blade.php"]
    (root / "REVISION").write_text("r2\n")
    return names


async def run(args: argparse.Namespace) -> int:
    gen = make_releases("cachewarden-bench-deploy-")
    rel = next(gen)
    fpm: Fpm | None = None
    try:
        root, fpm = setup(rel, args.views, args.scripts)
        config = parse({
            "laravel": [{"name": "shop", "root": str(root), "compiled_path": str(rel.compiled)}],
            "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                         "pool_config": str(fpm.pool_config), "laravel": "shop",
                         "revision_file": str(root / "REVISION"), "agent_timeout": "30s"}],
            "collectors": {"opcache": {"timeout": "30s", "interval": "60s"},
                           "views": {"timeout": "30s", "interval": "60s"}},
        })
        scheduler = Scheduler(build_collectors(config, {"fpm": False}))
        deployer = Deployer(HealRunner(config, scheduler, MemoryStore()), DeployMetrics(["shop"]))
        # The release as it is served before the deploy: every view compiled, every class cached.
        first = await deployer.run(DeployRequest("shop", phases=("prepare",)))
        assert first.result == "done", first.as_dict()
        warm = await fastcgi.request(fpm.address, params(root, "public/warm.php"), read_timeout=60)
        page = await fastcgi.request(fpm.address, params(root, "public/index.php"))
        assert page.body == expected(1).encode(), page.body[:300]
        status = await scheduler.collect("opcache", "www")  # the deploy's measurement baseline
        assert status.up, status.error
        print(f"release: {args.views} views, {args.scripts} PHP files ({warm.body.decode()} classes "
              f"declared by a warm-up request), {args.changed} of each changed", flush=True)

        receive, send = multiprocessing.Pipe(duplex=False)
        idle = args.seconds
        proc = multiprocessing.Process(target=clients, args=(fpm.address, str(root), idle + 12, send))
        proc.start()
        started = time.time()
        await asyncio.sleep(idle)  # requests without a deploy: the baseline p99
        names = pull(root, args.changed)
        counter = InFlight()
        fastcgi.request = counter.request  # type: ignore[assignment]
        deploy_start = time.time()
        t0 = time.perf_counter()
        run = await deployer.run(DeployRequest("shop", phases=("prepare", "activate", "verify"),
                                               changed_files=tuple(names), verify_timeout=30))
        elapsed = time.perf_counter() - t0
        deploy_end = time.time()
        fastcgi.request = counter._request  # type: ignore[assignment]
        # Received before joining: the rows fill the pipe, and the sender waits until they are read.
        rows: list[tuple[float, float, bool]] = await asyncio.to_thread(receive.recv)
        proc.join()
        await scheduler.close()
    finally:
        if fpm is not None:
            fpm.stop()
        gen.close()

    before = [lat for t, lat, _ in rows if started + 1 <= t < deploy_start]
    during = [lat for t, lat, _ in rows if deploy_start <= t < deploy_end]
    failed = sum(1 for _, _, ok in rows if not ok)
    ratio = p99(during) / p99(before)
    for r in run.records:
        print(f"  {r.phase}: {r.result} in {r.duration:.2f} s ({len(r.outcome.done)} operations)")
    print(f"deploy result: {run.result}")
    print(f"prepare + activate + verify: {elapsed:.2f} s (target < {SECONDS_TARGET:g} s)")
    print(f"FPM workers busy with cachewarden at once: at most {counter.max} of {counter.total} requests "
          f"(target <= {WORKERS_TARGET})")
    print(f"page p99: {p99(before) * 1000:.1f} ms without a deploy ({len(before)} requests), "
          f"{p99(during) * 1000:.1f} ms during it ({len(during)} requests): {ratio:.2f}x "
          f"(target <= {P99_RATIO_TARGET:g}x)")
    print(f"failed page requests: {failed} of {len(rows)}")
    met = (run.result == "verified" and elapsed < SECONDS_TARGET and counter.max <= WORKERS_TARGET
           and ratio <= P99_RATIO_TARGET and failed == 0)
    print("all targets met" if met else "TARGET MISSED")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=2000)
    parser.add_argument("--scripts", type=int, default=5000)
    parser.add_argument("--changed", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0, help="traffic without a deploy, first")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
