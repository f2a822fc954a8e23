"""Peak RSS of a `cachewarden serve` sidecar after 100 scrapes, beside redis_exporter + mysqld_exporter.

Two hosts, measured in one run against the same servers:
(a) a Laravel app with 1,000 compiled views, a PHP-FPM pool with OPcache: target <= 45 MB;
(b) the same plus the local Redis and MariaDB: target <= 70 MB.
The peers (Debian's prometheus-redis-exporter and prometheus-mysqld-exporter, on loopback against
the same Redis and MariaDB) are scraped as often; their peak RSS is printed beside, and their sum,
what (b) replaces. Peak RSS is VmHWM from /proc/PID/status, read after the last scrape. The collectors
run every second (FPM and OPcache every 2 s), so 100 scrapes 0.1 s apart span ten rounds (five).

Run: python bench/bench_memory.py   (needs php-fpm8.2, Redis on 127.0.0.1:6379 and MariaDB on
127.0.0.1:3306 with user root and no password, as scripts/start-services runs them)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402
from bench_views import build_tree  # noqa: E402

from tests.support.phpfpm import require_fpm, start_fpm  # noqa: E402
from tests.support.processes import stop_process  # noqa: E402
from tests.support.wait import free_port, wait_for  # noqa: E402

VIEWS = 1000
SCRAPES = 100
SCRAPE_EVERY = 0.1  # seconds
TARGET_A_MB = 45.0
TARGET_B_MB = 70.0
REDIS_URL = "redis://127.0.0.1:6379/0"
MARIADB_URL = "mysql+asyncmy://root@127.0.0.1:3306/test"


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


@contextmanager
def process(argv: list[str], env: dict[str, str] | None = None,
            log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        stop_process(proc, timeout=20)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        return str(resp.read().decode())


def scrape_often(proc: subprocess.Popen[bytes], port: int) -> float:
    """SCRAPES scrapes, paced; the process's peak RSS after them (MB)."""
    for _ in range(SCRAPES):
        started = time.monotonic()
        scrape(port)
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        time.sleep(max(0.0, SCRAPE_EVERY - (time.monotonic() - started)))
    return vm_hwm_mb(proc.pid)


def all_collected(port: int, collectors: set[str]) -> bool:
    """Every collector has succeeded once: the measure covers full rounds, not a process still idle."""
    body = scrape(port)
    ok = {line.split('collector="')[1].split('"')[0] for line in body.splitlines()
          if line.startswith("cachewarden_collector_up{") and line.endswith(" 1.0")}
    return collectors <= ok


def cachewarden(config: dict[str, Any], base: Path, collectors: set[str]) -> float:
    config_file = base / "cachewarden.yaml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "serve", "--config.file", str(config_file),
            "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error"]
    log = base / "cachewarden.log"
    with process(argv, log=log) as proc:
        def ready() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"cachewarden exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            return all_collected(port, collectors)

        wait_for(ready, timeout=60, message=f"collectors {sorted(collectors)} up")
        return scrape_often(proc, port)


FLOOR_A = "aiohttp.web, pydantic, prometheus_client, yaml"
FLOOR_B = FLOOR_A + ", sqlalchemy.ext.asyncio, sqlalchemy.dialects.mysql.asyncmy, asyncmy, redis.asyncio"


def libraries_alone(modules: str) -> float:
    """Peak RSS of this Python importing `modules` and nothing else: the floor under each figure."""
    code = (f"import {modules}\n"
            "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out) / 1024


def peers() -> tuple[float, float]:
    redis_port, mysqld_port = free_port(), free_port()
    with process(["prometheus-redis-exporter", "--redis.addr=redis://127.0.0.1:6379",
                  f"--web.listen-address=127.0.0.1:{redis_port}"]) as redis_exp, \
            process(["prometheus-mysqld-exporter", f"--web.listen-address=127.0.0.1:{mysqld_port}"],
                    env={"DATA_SOURCE_NAME": "root@tcp(127.0.0.1:3306)/"}) as mysqld_exp:
        wait_for(lambda: "redis_up 1" in scrape(redis_port), timeout=30, message="redis_exporter up")
        wait_for(lambda: "mysql_up 1" in scrape(mysqld_port), timeout=30, message="mysqld_exporter up")
        return scrape_often(redis_exp, redis_port), scrape_often(mysqld_exp, mysqld_port)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    require_fpm()
    for binary in ("prometheus-redis-exporter", "prometheus-mysqld-exporter"):
        if shutil.which(binary) is None:
            print(f"{binary} is not installed", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="cachewarden-bench-memory-") as tmp:
        base = Path(tmp)
        app = base / "app"
        views, compiled = build_tree(app, VIEWS)
        fpm = start_fpm(base / "fpm")
        token = base / "heal-token"
        token.write_text("bench-memory-heal-token-0123456789\n")
        token.chmod(0o600)
        try:
            every_second = {"interval": "1s", "timeout": "1s"}
            fpm_every_2s = {"interval": "2s", "timeout": "2s"}
            a: dict[str, Any] = {
                "collectors": {"views": every_second, "redis": every_second, "sql": every_second,
                               "fpm": fpm_every_2s, "opcache": fpm_every_2s},
                "laravel": [{"name": "shop", "root": str(app), "views_path": str(views),
                             "compiled_path": str(compiled)}],
                "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                             "pool_config": str(fpm.pool_config), "connect_timeout": "0.5s",
                             "status_timeout": "1s"}],
                "heal": {"token_file": str(token)},
            }
            b = {**a, "redis": [{"name": "cache", "url": REDIS_URL}],
                 "databases": [{"name": "main", "url": MARIADB_URL}]}
            peak_a = cachewarden(a, base, {"views", "fpm", "opcache"})
            peak_b = cachewarden(b, base, {"views", "fpm", "opcache", "redis", "sql"})
        finally:
            fpm.stop()
        redis_exp, mysqld_exp = peers()
    floor_a, floor_b = libraries_alone(FLOOR_A), libraries_alone(FLOOR_B)

    print(f"{VIEWS} views, PHP-FPM with OPcache; peak RSS (VmHWM) after {SCRAPES} scrapes")
    print(f"peers: redis_exporter {redis_exp:.1f} MB, mysqld_exporter {mysqld_exp:.1f} MB, "
          f"together {redis_exp + mysqld_exp:.1f} MB")
    print(f"(a) views + FPM + OPcache: measured {peak_a:.1f} MB, target {TARGET_A_MB:.0f} MB, "
          f"{'PASS' if peak_a <= TARGET_A_MB else 'FAIL'}")
    print(f"    the libraries alone ({FLOOR_A}): {floor_a:.1f} MB")
    print(f"(b) + Redis + MariaDB:     measured {peak_b:.1f} MB, target {TARGET_B_MB:.0f} MB, "
          f"{'PASS' if peak_b <= TARGET_B_MB else 'FAIL'}")
    print(f"    the libraries alone (and SQLAlchemy's asyncio engine, asyncmy, redis): {floor_b:.1f} MB")
    return 0 if peak_a <= TARGET_A_MB and peak_b <= TARGET_B_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
