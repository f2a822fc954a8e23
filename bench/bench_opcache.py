"""Benchmark of the OPcache collector against a real php-fpm8.2 whose OPcache holds 20,000 scripts and
whose opcache.file_cache holds their 20,000 entries.

Targets:
- one OPcache collection (agent request, transfer, JSON parse, drift inference, and the scan of the
  file cache) under 300 ms, the slowest of several, the first (empty drift state) included;
- under 40 MB of extra peak RSS in the Python process during those collections (VmHWM, reset through
  /proc/self/clear_refs before measuring);
- the exporter never holds more than one FPM worker at a time: the fpm and opcache collectors of one
  target run concurrently, round after round, on a pool of 2 workers, while every FastCGI request
  the process sends is counted at the socket layer (exporter.php.fastcgi.request is wrapped, below
  the per-target lock): the most requests open at once must be 1. FPM's own `max active processes`
  is printed beside it but cannot serve as the measure: FPM counts a worker active until its request
  bookkeeping ends, after the response was already sent, so strictly sequential requests show 2;
- a rescan of the file cache with nothing changed costs at most 1.5 times a bare stat walk of its
  entries (recursive scandir and an lstat of each, nothing else), the best of several runs of each.

The 20,000 tiny PHP files are generated with an mtime in the past (OPcache skips files younger than
file_update_protection) and included through FPM in a few requests. Run: python bench/bench_opcache.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.collectors import build_collectors
from exporter.collectors.fpm import FpmCollector
from exporter.collectors.opcache import OPCACHE_CACHED_SCRIPTS, OpcacheCollector
from exporter.collectors.opcache_file_cache import FILE_CACHE_ENTRIES, FILE_CACHE_STALE, source_times
from exporter.config import parse
from exporter.fs.opcache_file_cache import scan_file_cache
from exporter.php import fastcgi
from tests.support.phpfpm import Fpm, require_fpm, start_fpm

TIME_TARGET_MS = 300.0
RSS_TARGET_MB = 40.0
WORKERS_TARGET = 1
RESCAN_RATIO_TARGET = 1.5
SCAN_RUNS = 7
LOAD_BATCH = 5000

LOADER = """<?php
$from = (int) $_GET['from'];
$to = (int) $_GET['to'];
for ($i = $from; $i < $to; $i++) {
    include __DIR__ . sprintf('/s/%02d/%05d.php', intdiv($i, 1000), $i);
}
echo $to - $from;
"""


def vm_hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def vm_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def generate(fpm: Fpm, count: int) -> None:
    past = time.time() - 3600
    for i in range(count):
        d = fpm.docroot / "s" / f"{i // 1000:02d}"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{i:05d}.php"
        path.write_text(f"<?php return {i};\n")
        os.utime(path, (past, past))
    fpm.script("load.php", LOADER, mtime=past)


async def warm(fpm: Fpm, count: int) -> None:
    for start in range(0, count, LOAD_BATCH):
        end = min(count, start + LOAD_BATCH)
        resp = await fpm.get("load.php", f"from={start}&to={end}", timeout=120)
        if resp.body != str(end - start).encode():
            raise RuntimeError(f"loader failed: HTTP {resp.status} {resp.body[:200]!r}")


def collectors(fpm: Fpm) -> tuple[FpmCollector, OpcacheCollector]:
    config = parse({"php_fpm": [{"name": "bench", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                                 "pool_config": str(fpm.pool_config), "agent_timeout": 30}]})
    fpm_c, opcache_c = build_collectors(config, {"fpm": True, "opcache": True})
    assert isinstance(fpm_c, FpmCollector)
    assert isinstance(opcache_c, OpcacheCollector)
    return fpm_c, opcache_c


class RequestCounter:
    """Wraps fastcgi.request to record the most requests open at once in this process."""

    def __init__(self) -> None:
        self.open = 0
        self.max_open = 0
        self._original = fastcgi.request

    async def _request(self, *args: Any, **kwargs: Any) -> fastcgi.Response:
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            return await self._original(*args, **kwargs)
        finally:
            self.open -= 1

    def __enter__(self) -> RequestCounter:
        fastcgi.request = self._request  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        fastcgi.request = self._original  # type: ignore[assignment]


def bare_stat_walk(root: str) -> int:
    """The floor: every entry listed and lstat'ed, nothing decided."""
    n = 0
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                st = entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif st.st_size:
                    n += 1
    return n


def best_of(runs: int, fn: Any) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        timings.append((time.perf_counter() - started) * 1000)
    return min(timings)


async def rescan_ratio(opcache_c: OpcacheCollector, file_cache: Path) -> tuple[float, float, int]:
    """(rescan ms, bare walk ms, entries the walk saw): the scan as a collection runs it, with the
    agent's stats of the cached scripts, against the bare walk of the same tree."""
    reply = await opcache_c.agent.run("status", {})
    sources = source_times(reply.result["status"]["scripts"])
    directory = str(file_cache)
    scan_file_cache(directory, sources)  # the first scan: page cache and dentries warm for both
    walked = bare_stat_walk(directory)
    rescan = best_of(SCAN_RUNS, lambda: scan_file_cache(directory, sources))
    bare = best_of(SCAN_RUNS, lambda: bare_stat_walk(directory))
    return rescan, bare, walked


async def max_active_processes(fpm: Fpm) -> int:
    resp = await fpm.get("/fpm-status", "json")
    return int(json.loads(resp.body)["max active processes"])


async def main(count: int, rounds: int) -> int:
    require_fpm()
    with tempfile.TemporaryDirectory(prefix="bench-opcache-") as tmp:
        file_cache = Path(tmp) / "file-cache"
        file_cache.mkdir()
        fpm = start_fpm(
            Path(tmp) / "fpm",
            opcache={"opcache.validate_timestamps": 0, "opcache.max_accelerated_files": 32531,
                     "opcache.memory_consumption": 512, "opcache.interned_strings_buffer": 64,
                     "opcache.file_cache": str(file_cache)},
            pool={"pm": "static", "pm.max_children": 2},
        )
        try:
            t0 = time.perf_counter()
            generate(fpm, count)
            await warm(fpm, count)
            print(f"setup: {count} scripts written and cached in {time.perf_counter() - t0:.1f}s")
            fpm_c, opcache_c = collectors(fpm)

            rss_before = vm_rss_kb()
            reset_peak_rss()
            timings = []
            cached = entries = 0.0
            for _ in range(rounds):
                started = time.perf_counter()
                obs = await opcache_c.collect()
                timings.append((time.perf_counter() - started) * 1000)
                cached = obs.samples.value(OPCACHE_CACHED_SCRIPTS) or 0
                entries = obs.samples.value(FILE_CACHE_ENTRIES) or 0
                if obs.samples.value(FILE_CACHE_STALE) != 0:
                    print("FAIL: the file cache of an unchanged tree is measured stale")
                    return 1
            extra_mb = max(0, vm_hwm_kb() - rss_before) / 1024
            if cached < count or entries < count:
                print(f"FAIL: OPcache holds {cached:g} scripts and {entries:g} file-cache entries, "
                      f"expected at least {count} of each")
                return 1
            rescan_ms, bare_ms, walked = await rescan_ratio(opcache_c, file_cache)

            with RequestCounter() as counter:
                for _ in range(rounds * 4):
                    await asyncio.gather(fpm_c.collect(), opcache_c.collect())
            workers = counter.max_open
            fpm_max_active = await max_active_processes(fpm)
        finally:
            fpm.stop()

    results = [
        ("slowest OPcache collection", max(timings), TIME_TARGET_MS, "ms"),
        ("extra peak RSS", extra_mb, RSS_TARGET_MB, "MB"),
        ("FPM requests (workers) held at once", workers, WORKERS_TARGET, ""),
        ("file-cache rescan / bare stat walk", rescan_ms / bare_ms, RESCAN_RATIO_TARGET, "x"),
    ]
    print(f"collections (ms): first {timings[0]:.0f}, median {sorted(timings)[len(timings) // 2]:.0f}; "
          f"{cached:g} cached scripts, {entries:g} file-cache entries; FPM's max active processes "
          f"{fpm_max_active}")
    print(f"file cache: rescan {rescan_ms:.1f}ms, bare stat walk {bare_ms:.1f}ms of {walked} entries "
          f"(best of {SCAN_RUNS})")
    failed = False
    for name, measured, target, unit in results:
        at_most = unit in ("", "x")
        ok = measured <= target if at_most else measured < target
        failed |= not ok
        print(f"{name}: measured {measured:.2f}{unit}, target {'<=' if at_most else '<'} "
              f"{target:g}{unit}, {'PASS' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.scripts, args.rounds)))
