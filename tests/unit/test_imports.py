"""A sidecar imports only what its configured collectors use: each heavy library costs every pod megabytes
of RSS (SQLAlchemy ~17 MB, redis ~6 MB, jinja2 ~3 MB; bench/bench_memory.py measures the whole)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.wait import free_port

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "asyncmy", "asyncpg", "redis", "jinja2")

# `cachewarden serve` started for real in the subprocess; a thread waits for it to answer, records the
# heavy modules loaded after a scrape and after a visit to the status page, then stops it with SIGTERM.
PROBE = """
import json, os, signal, sys, threading, time, urllib.request
from exporter.cli import main

heavy, port, argv = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
seen = {}

def loaded():
    return sorted(m for m in heavy if m in sys.modules)

def probe():
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    seen["serving"] = loaded()
    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
    seen["status_page"] = loaded()
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
code = main(argv)
print(json.dumps({"code": code, **seen}))
"""


def serve_and_list_heavy_modules(config: dict[str, object], tmp_path: Path) -> dict[str, object]:
    config_file = tmp_path / "cachewarden.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    argv = ["serve", "--config.file", str(config_file), "--web.listen-address", f"127.0.0.1:{port}",
            "--log.level", "error"]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), str(port), json.dumps(argv)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0, done.stderr
    return result


def test_views_and_fpm_alone_import_no_database_redis_or_template_library(tmp_path: Path) -> None:
    app = tmp_path / "shop"
    for d in ("resources/views", "storage/framework/views"):
        (app / d).mkdir(parents=True)
    (tmp_path / "agent").mkdir()
    token = tmp_path / "heal-token"
    token.write_text("a-heal-token-long-enough-0123456789\n", encoding="utf-8")
    token.chmod(0o600)
    config = {
        "laravel": [{"name": "shop", "root": str(app)}],
        # Nothing listens there: the collectors fail, which must not import anything either.
        "php_fpm": [{"name": "www", "address": f"127.0.0.1:{free_port()}",
                     "agent_dir": str(tmp_path / "agent")}],
        "heal": {"token_file": str(token)},
    }

    seen = serve_and_list_heavy_modules(config, tmp_path)

    assert seen["serving"] == []
    assert seen["status_page"] == ["jinja2"]  # loaded on the first visit, not before


def test_a_redis_target_imports_redis_and_not_the_database_libraries(tmp_path: Path) -> None:
    config = {"redis": [{"name": "cache", "url": f"redis://127.0.0.1:{free_port()}/0"}],
              "heal": {"enabled": False}}

    seen = serve_and_list_heavy_modules(config, tmp_path)

    assert seen["serving"] == ["redis"]
