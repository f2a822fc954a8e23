"""Benchmark of the compiled-view collector on 100,000 compiled views with their sources.

Targets:
- warm rescan <= 1.5x a bare os.scandir + stat walk of the same files (compiled files and sources);
- cold scan <= 1.5x a walk that reads the last 200 bytes of every compiled file (and stats the sources);
- peak RSS (VmHWM) of the real `cachewarden serve`, configured with one Laravel app, < 80 MB: read once
  it has completed three scans (the cold one and two rescans), and again after the /metrics load below;
  the later, higher figure is the one held to the target;
- /metrics p99 < 25 ms from that server while it rescans them back to back (interval 2 s, timeout 2 s,
  so a scan is running most of the time), under a scrape load of 4 clients each sending GET /metrics
  every 100 ms for 25 s (40 scrapes a second: far more than any set of Prometheus servers sends); at least
  5 rescans must complete during the load. Clients sending back to back are not a scrape load: they
  keep the event loop busy all the time, so the scan thread waits for the interpreter lock after every
  stat() and the rescans, not the scrapes, are what suffers.

The tree is synthetic (written from Python, footers as Laravel writes them) so that it builds in
seconds; a few views are made stale, orphaned and uncompiled. Run: python bench/bench_views.py
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.collectors.views import ViewsCollector
from exporter.config import parse
from tests.support.wait import async_wait_for, free_port

WARM_RATIO_TARGET = 1.5
COLD_RATIO_TARGET = 1.5
RSS_TARGET_MB = 80.0
P99_TARGET_MS = 25.0
STALE, ORPHANED, UNCOMPILED = 7, 5, 3
ROUNDS = 5
SERVER_INTERVAL = 2.0  # seconds between the server's rescans while /metrics is scraped
SERVER_TIMEOUT = 2.0
SCRAPERS = 4  # concurrent clients during the load
SCRAPE_EVERY = 0.1  # seconds between one client's requests
MIN_RESCANS = 5
SCANS_BEFORE_RSS = 3  # the cold scan and two rescans
LAST_SUCCESS = "cachewarden_collector_last_success_timestamp_seconds{"
NS = 1_000_000_000
BODY = (
    "<?php $__env->startSection('content'); ?>\n<div class=\"card\">\n"
    "    <h1><?php echo e($title); ?></h1>\n    <?php echo $__env->make('partials.alert', "
    "\\Illuminate\\Support\\Arr::except(get_defined_vars(), ['__data', '__path']))->render(); ?>\n"
    "</div>\n<?php $__env->stopSection(); ?>\n\n<?php echo $__env->make('layouts.app', "
    "\\Illuminate\\Support\\Arr::except(get_defined_vars(), ['__data', '__path']))->render(); ?>"
)


def build_tree(base: Path, count: int) -> tuple[Path, Path]:
    """`count` compiled views in one directory (as Laravel keeps them), sources in 100 subdirectories."""
    views, compiled = base / "resources" / "views", base / "storage" / "framework" / "views"
    compiled.mkdir(parents=True)
    past = time.time() - 3600
    for i in range(count):
        source = views / f"module{i % 100:02d}" / f"view{i:06d}.blade.php"
        if i < 100:
            source.parent.mkdir(parents=True)
        uncompiled = i >= count - UNCOMPILED
        if i >= ORPHANED:  # the first few compiled views lose their source
            source.write_text(f"<h1>{{{{ $title }}}}</h1> {i}\n")
            mtime = past + 120 if i < ORPHANED + STALE else past  # a few edited after their compile
            os.utime(source, (mtime, mtime))
        if uncompiled:
            continue
        target = compiled / (hashlib.sha1(f"v2{source}".encode()).hexdigest() + ".php")  # noqa: S324
        target.write_text(f"{BODY}<?php /**PATH {source} ENDPATH**/ ?>")
        os.utime(target, (past + 60, past + 60))
    # Orphans replace the uncompiled views' slots so that exactly `count` compiled files exist.
    for i in range(UNCOMPILED):
        ghost = views / "deleted" / f"gone{i}.blade.php"
        (compiled / (hashlib.sha1(f"v2{ghost}".encode()).hexdigest() + ".php")).write_text(  # noqa: S324
            f"{BODY}<?php /**PATH {ghost} ENDPATH**/ ?>")
    return views, compiled


def walk_stat(views: Path, compiled: Path) -> int:
    n = 0
    with os.scandir(compiled) as it:
        for entry in it:
            entry.stat(follow_symlinks=False)
            n += 1
    return n + stat_sources(views)


def walk_tails(views: Path, compiled: Path) -> int:
    n = 0
    with os.scandir(compiled) as it:
        for entry in it:
            fd = os.open(entry.path, os.O_RDONLY)
            try:
                os.lseek(fd, -200, os.SEEK_END)
                os.read(fd, 200)
            finally:
                os.close(fd)
            n += 1
    return n + stat_sources(views)


def stat_sources(directory: Path) -> int:
    n = 0
    with os.scandir(directory) as it:
        for entry in it:
            if entry.is_dir():
                n += stat_sources(Path(entry.path))
            else:
                entry.stat()
                n += 1
    return n


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def config_data(base: Path, views: Path, compiled: Path, interval: float,
                timeout: float) -> dict[str, object]:
    return {
        "collectors": {"views": {"interval": interval, "timeout": timeout}},
        "laravel": [{"name": "bench", "root": str(base), "views_path": str(views),
                     "compiled_path": str(compiled)}],
    }


def measure_scans(base: Path, views: Path, compiled: Path) -> tuple[float, float, float, float, int]:
    config = parse(config_data(base, views, compiled, 15.0, 15.0))

    def new_collector() -> ViewsCollector:
        return ViewsCollector(config.laravel[0], interval=15.0, timeout=600.0)

    walk_stat(views, compiled)  # warm the kernel's caches for every contender alike
    collector = new_collector()
    asyncio.run(collector.collect())
    # Rounds interleave the contenders so that load from elsewhere on the machine hits them alike;
    # each one's best round is the figure least disturbed by it.
    rounds: dict[str, list[float]] = {"bare": [], "tails": [], "cold": [], "warm": []}
    for _ in range(ROUNDS):
        rounds["bare"].append(timed(lambda: walk_stat(views, compiled)))
        rounds["warm"].append(timed(lambda: asyncio.run(collector.collect())))
        rounds["tails"].append(timed(lambda: walk_tails(views, compiled)))
        rounds["cold"].append(timed(lambda: asyncio.run(new_collector().collect())))
    bare, tails, cold, warm = (min(rounds[k]) for k in ("bare", "tails", "cold", "warm"))
    scan = collector.scanner.scan()
    found = (scan.compiled, len(scan.stale), len(scan.orphaned), len(scan.uncompiled))
    if found != (len(os.listdir(compiled)), STALE, ORPHANED + UNCOMPILED, UNCOMPILED):
        raise SystemExit(f"wrong counts (compiled, stale, orphaned, uncompiled): {found}")
    return bare, tails, cold, warm, scan.compiled


async def views_last_success(session: aiohttp.ClientSession, url: str) -> float:
    """The views collector's last success timestamp on /metrics (0 before the first)."""
    async with session.get(url) as resp:
        return last_success_in(await resp.text())


def last_success_in(body: str) -> float:
    for line in body.splitlines():
        if line.startswith(LAST_SUCCESS) and 'collector="views"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def exercise_server(port: int, pid: int, seconds: float) -> tuple[float, list[float], int]:
    """Wait for SCANS_BEFORE_RSS completed scans and read the peak RSS; then SCRAPERS clients GET
    /metrics every SCRAPE_EVERY seconds for `seconds`. Returns that RSS, the latencies in ms, and how
    many scans finished meanwhile."""
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session:
        successes: set[float] = set()

        async def enough_scans() -> bool:
            successes.add(await views_last_success(session, url))
            successes.discard(0.0)
            return len(successes) >= SCANS_BEFORE_RSS

        await async_wait_for(enough_scans, timeout=300, interval=0.2,
                             message=f"{SCANS_BEFORE_RSS} completed scans")
        rss_after_scans = vm_hwm_mb(pid)
        before = await views_last_success(session, url)
        latencies: list[float] = []
        scans_seen = set()
        deadline = time.monotonic() + seconds

        async def scrape() -> None:
            next_at = time.monotonic()
            while next_at < deadline:
                started = time.perf_counter()
                async with session.get(url) as resp:
                    body = await resp.read()
                latencies.append((time.perf_counter() - started) * 1000)
                scans_seen.add(last_success_in(body.decode()))
                # A paced client, as a scraper is; a slow answer delays the next request, not piles up.
                next_at = max(next_at + SCRAPE_EVERY, time.monotonic())
                await asyncio.sleep(next_at - time.monotonic())

        await asyncio.gather(*(scrape() for _ in range(SCRAPERS)))
        scans_seen.discard(before)
    return rss_after_scans, latencies, len(scans_seen)


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def write_config(base: Path, views: Path, compiled: Path, interval: float, timeout: float) -> Path:
    import yaml

    config_file = base / "cachewarden.yaml"
    config_file.write_text(yaml.safe_dump(config_data(base, views, compiled, interval, timeout)))
    return config_file


def measure_server(base: Path, views: Path, compiled: Path,
                   seconds: float) -> tuple[float, float, list[float], int]:
    """The real server: peak RSS after its first scans, latencies under load, scans during the load,
    and its peak RSS at the end."""
    config_file = write_config(base, views, compiled, SERVER_INTERVAL, SERVER_TIMEOUT)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config.file", str(config_file),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error"],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        rss_after_scans, latencies, scans = asyncio.run(exercise_server(port, server.pid, seconds))
        rss_end = vm_hwm_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rss_after_scans, rss_end, latencies, scans


def verdict(name: str, measured: str, target: str, ok: bool) -> bool:
    print(f"{name}: measured {measured}, target {target}, {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=100_000, help="compiled views (and sources)")
    parser.add_argument("--seconds", type=float, default=25.0, help="how long /metrics is scraped")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cachewarden-bench-views-"))
    try:
        started = time.perf_counter()
        views, compiled = build_tree(base, args.views)
        print(f"built {args.views} compiled views and sources in {time.perf_counter() - started:.1f} s")
        bare, tails, cold, warm, count = measure_scans(base, views, compiled)
        rss_after_scans, rss, latencies, scans = measure_server(base, views, compiled, args.seconds)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(f"bare stat walk {bare:.3f} s, tail-reading walk {tails:.3f} s, {count} compiled files")
    print(f"server peak RSS {rss_after_scans:.1f} MB after {SCANS_BEFORE_RSS} scans, {rss:.1f} MB after "
          f"{len(latencies)} requests to /metrics from {SCRAPERS} clients during {args.seconds:g} s, "
          f"{scans} rescans completed meanwhile (interval {SERVER_INTERVAL:g} s, "
          f"timeout {SERVER_TIMEOUT:g} s)")
    results = [
        verdict("warm rescan", f"{warm:.3f} s = {warm / bare:.2f}x stat walk",
                f"<= {WARM_RATIO_TARGET}x", warm <= WARM_RATIO_TARGET * bare),
        verdict("cold scan", f"{cold:.3f} s = {cold / tails:.2f}x tail-reading walk",
                f"<= {COLD_RATIO_TARGET}x", cold <= COLD_RATIO_TARGET * tails),
        verdict("server peak RSS", f"{rss:.1f} MB", f"< {RSS_TARGET_MB:g} MB", rss < RSS_TARGET_MB),
        verdict("/metrics p99 during rescans", f"{p99:.1f} ms", f"< {P99_TARGET_MS:g} ms",
                p99 < P99_TARGET_MS and scans >= MIN_RESCANS),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
