"""Benchmark of the bootstrap-cache collector on an app with 2,000 config and route files.

Targets:
- a collection of all five caches (config, routes, events, services, packages) when nothing changed
  since the last one: < 20 ms wall (the median of the rounds, `collect()` as the scheduler calls it);
- in those collections no PHP process is started: the collector is configured with `heal.php_cli`, and
  both its own count of PHP runs and the PHP processes seen starting (a wrapper script around the CLI
  counts its invocations) stay where the first, cold collection left them;
- a change (one config file touched) does run PHP once, so the fast path is not PHP that never runs.

The app is the test suite's real Laravel app (tests/support/laravel_app) with 1,000 extra files under
config/ (in 20 folders) and 1,000 under routes/, its caches built by artisan.
Run: python bench/bench_laravel_caches.py
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.collectors import build_collectors
from exporter.collectors.laravel_caches import LaravelCachesCollector
from exporter.config import parse
from tests.support.laravel_app import backdate, cache_all, make_app

TARGET_MS = 20.0
ROUNDS = 50


def build(base: Path, files: int) -> Path:
    root = make_app(base / "shop")
    for i in range(files // 2):
        folder = root / "config" / f"group{i % 20:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"c{i:04d}.php").write_text(f"<?php return ['value' => env('V{i % 7}', {i})];\n")
        (root / "routes" / f"r{i:04d}.php").write_text(f"<?php // routes of module {i}\n")
    backdate(root, 120)
    cache_all(root, seconds_ago=60)
    return root


def counting_php(base: Path) -> tuple[Path, Path]:
    """A `php` that appends a line to a log each time it starts, then runs the real one."""
    real = shutil.which("php")
    if real is None:
        raise SystemExit("php (the CLI) is not installed")
    log = base / "php-starts.log"
    wrapper = base / "php"
    wrapper.write_text(f"#!/bin/sh\necho start >> {log}\nexec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper, log


def starts(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def report(name: str, measured: str, target: str, ok: bool) -> bool:
    print(f"{name}: measured {measured}, target {target}, {'PASS' if ok else 'FAIL'}")
    return ok


async def run(root: Path, php: Path, log: Path) -> bool:
    config = parse({"laravel": [{"name": "shop", "root": str(root)}], "heal": {"php_cli": str(php)},
                    "collectors": {k: {"enabled": False} for k in (
                        "views", "fpm", "opcache", "redis", "sql", "app_stats")}})
    [collector] = build_collectors(config)
    assert isinstance(collector, LaravelCachesCollector)
    cold = await collector.collect()
    if cold.details["stale"] or cold.details["unparsable"] or cold.details["env_keys_differing"] != []:
        raise SystemExit(f"the app is not healthy to start with: {cold.details}")
    runs, php_starts = collector.inspections, starts(log)
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await collector.collect()
        times.append((time.perf_counter() - started) * 1000)
    median, worst = statistics.median(times), max(times)
    print(f"{ROUNDS} unchanged collections: median {median:.2f} ms, max {worst:.2f} ms")
    ok = report("collection of all five caches, nothing changed", f"{median:.2f} ms", f"< {TARGET_MS:g} ms",
                median < TARGET_MS)
    idle_starts = starts(log) - php_starts
    ok &= report("PHP processes started by unchanged collections", str(idle_starts), "0",
                 idle_starts == 0 and collector.inspections == runs)
    (root / "config" / "group00" / "c0000.php").touch()
    await collector.collect()
    changed_starts = starts(log) - php_starts
    ok &= report("PHP processes started after one config file changed", str(changed_starts), "1",
                 changed_starts == 1 and collector.inspections == runs + 1)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="config and route files (half each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cachewarden-bench-") as tmp:
        base = Path(tmp)
        started = time.perf_counter()
        root = build(base, args.files)
        inputs = sum(1 for d in ("config", "routes") for _ in (root / d).rglob("*.php"))
        print(f"built an app with {inputs} config and route files in {time.perf_counter() - started:.1f} s")
        php, log = counting_php(base)
        ok = asyncio.run(run(root, php, log))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
