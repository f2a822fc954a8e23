"""scripts/start-services against fake server tools on PATH: what it concludes from what they report."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fake_tools(bin_dir: Path, cluster_port: int, listening: set[int]) -> None:
    """Redis and MariaDB answer; one PostgreSQL cluster `15 main` on `cluster_port`; `listening` ports
    answer pg_isready and psql."""
    bin_dir.mkdir()
    ports = " ".join(str(p) for p in sorted(listening))
    scripts = {
        "redis-cli": "echo PONG",
        "mariadb-admin": "exit 0",
        "mariadb": "exit 0",
        "pg_lsclusters": f'echo "15  main    {cluster_port} online postgres /var/lib/postgresql/15/main log"',
        # the port follows -p in both tools' arguments (5432 without it, as for the real ones)
        "pg_isready": f'port=5432; while [ $# -gt 0 ]; do [ "$1" = -p ] && port=$2; shift; done\n'
                      f'for p in {ports}; do [ "$p" = "$port" ] && exit 0; done; exit 2',
        "psql": f'port=5432; while [ $# -gt 0 ]; do [ "$1" = -p ] && port=$2; shift; done\n'
                f'for p in {ports}; do [ "$p" = "$port" ] && {{ echo 1; exit 0; }}; done; exit 2',
        "pg_ctlcluster": "exit 0",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


def start_services(bin_dir: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DEADLINE_SECONDS": "20"}
    began = time.monotonic()
    result = subprocess.run([str(ROOT / "scripts" / "start-services")], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    return result, time.monotonic() - began


def test_a_cluster_created_on_5433_is_named_with_its_port_instead_of_a_wait_for_5432(tmp_path: Path) -> None:
    fake_tools(tmp_path / "bin", cluster_port=5433, listening={5433})
    result, seconds = start_services(tmp_path / "bin")
    assert result.returncode == 1
    assert "listens on port 5433, not 5432" in result.stderr
    assert "pg_conftool 15 main set port 5432" in result.stderr
    assert "not ready" not in result.stderr
    assert seconds < 20, "no deadline was waited out"


def test_a_cluster_on_5433_beside_a_trusted_server_on_5432_is_reported_and_the_suite_goes_on(
    tmp_path: Path,
) -> None:
    fake_tools(tmp_path / "bin", cluster_port=5433, listening={5432, 5433})
    result, _ = start_services(tmp_path / "bin")
    assert result.returncode == 0, result.stderr
    assert "15/main already running on port 5433" in result.stderr
    assert "the tests use the PostgreSQL that answers on 5432" in result.stderr


def test_the_usual_cluster_on_5432_is_used_as_before(tmp_path: Path) -> None:
    fake_tools(tmp_path / "bin", cluster_port=5432, listening={5432})
    result, _ = start_services(tmp_path / "bin")
    assert result.returncode == 0, result.stderr
    assert "15/main already running on port 5432" in result.stderr
    assert "redis, mariadb and postgresql are up" in result.stderr
