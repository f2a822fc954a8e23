"""The demo `scripts/run` drives, step by step, into a private directory: scripts/demo-setup builds it and
starts its unprivileged FPM pool, `cachewarden serve` watches it, `demo-setup deploy` changes the code
under the running pool, and the heal command the deploy prints (run as printed, with curl) leaves
views and OPcache healthy. A second setup over the first one is safe.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.phpfpm import require_fpm
from tests.support.prometheus import running
from tests.support.wait import free_port, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "demo-setup"
HEALTHY_AT_ZERO = (
    "cachewarden_views_stale", "cachewarden_views_orphaned", "cachewarden_views_uncompiled",
    "cachewarden_opcache_scripts_stale", "cachewarden_opcache_scripts_suspect",
    "cachewarden_opcache_scripts_missing", "cachewarden_code_revision_drift",
)


@dataclass
class Demo:
    root: Path
    url: str

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:  # noqa: S310 - local test server
            return str(r.read().decode())

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        text = self.get("/metrics")
        return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples
                if s.labels.get("target") == "demo"]

    def value(self, name: str) -> float | None:
        values = [v for n, _, v in self.samples() if n == name]
        return sum(values) if values else None

    def fpm_pid(self) -> int:
        return int((self.root / "fpm" / "php-fpm.pid").read_text())


def setup(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEMO_DIR": str(root), "VENV": str(Path(sys.executable).parents[1])}
    return subprocess.run([str(SETUP)], env=env, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture
def demo() -> Iterator[Demo]:
    require_fpm()
    for tool in ("php", "curl", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-deps demo)")
    # Not pytest's tmp_path: its parents are private to root, and the pool runs as nobody.
    root = Path(tempfile.mkdtemp(prefix="cachewarden-demo-"))
    root.chmod(0o755)
    demo_dir = root / "demo"
    try:
        setup(demo_dir)
        address = f"127.0.0.1:{free_port()}"
        argv = [sys.executable, "-m", "exporter", "serve",
                "--config.file", str(demo_dir / "cachewarden.yaml"), "--web.listen-address", address]
        with running(argv, root / "cachewarden.log", f"http://{address}/healthz", "cachewarden on the demo",
                     cwd=ROOT):
            yield Demo(demo_dir, f"http://{address}")
    finally:
        subprocess.run([str(SETUP), "stop"], env={**os.environ, "DEMO_DIR": str(demo_dir)}, check=False,
                       capture_output=True, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def deploy(demo: Demo) -> str:
    env = {**os.environ, "DEMO_DIR": str(demo.root), "VENV": str(Path(sys.executable).parents[1])}
    result = subprocess.run([str(SETUP), "deploy", demo.url], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_deploy_shows_stale_bytecode_and_its_ini_file_and_the_printed_curl_heals_everything(
    demo: Demo,
) -> None:
    pool_user = subprocess.run(["ps", "-o", "user=", "-p", str(demo.fpm_pid())], capture_output=True,
                               text=True, check=True).stdout.strip()
    assert pool_user == "nobody", "the demo's FPM master is unprivileged"

    printed = deploy(demo)
    assert "PHP-FPM still serves: demo app, revision v1" in printed

    samples = demo.samples()
    settings = {labels["directive"]: labels for name, labels, _ in samples
                if name == "cachewarden_opcache_setting_info"}
    assert settings["validate_timestamps"]["value"] == "0"
    assert settings["validate_timestamps"]["source"] == str(
        demo.root / "php" / "conf.d" / "99-opcache-performance.ini")
    assert (demo.value("cachewarden_opcache_scripts_stale") or 0) >= 2
    assert [labels for name, labels, _ in samples if name == "cachewarden_code_revision_info"] == [
        {"target": "demo", "running": "v1", "disk": "v2"}]
    for name in ("cachewarden_views_stale", "cachewarden_views_orphaned", "cachewarden_views_uncompiled"):
        assert (demo.value(name) or 0) > 0, name

    ini = demo.root / "php" / "conf.d" / "99-opcache-performance.ini"
    status_page = demo.get("/")
    assert f"validate_timestamps=0 set by {ini}" in status_page
    assert str(demo.root / "revision.php") in status_page, "the stale script is named"
    check = subprocess.run([sys.executable, "-m", "exporter", "check", "--config.file",
                            str(demo.root / "cachewarden.yaml")], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1
    assert f"validate_timestamps=0 set by {ini}" in check.stdout
    assert "FPM runs revision v1" in check.stdout

    heal = [line for line in printed.splitlines() if line.startswith("curl ")]
    assert len(heal) == 1, printed
    assert "target=demo" in heal[0]
    assert "action=" not in heal[0], "one request heals every problem"
    answer = subprocess.run(["bash", "-c", heal[0]], capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stdout + answer.stderr  # --fail-with-body: 200 means verified
    body = json.loads(answer.stdout)
    runs = {r["plan"]: (r["result"], [s["action"] for s in r["step_results"] if s["result"] != "skipped"])
            for r in body["runs"]}
    assert body["result"] == "verified", body
    # The orphaned view too; and the old bytecode goes with an invalidation alone, verified on a host
    # that gets no request in between (no reset needed).
    assert runs["CachewardenViewsStale"] == ("verified", ["views.recompile"]), runs
    assert runs["CachewardenViewsOrphaned"] == ("verified", ["views.remove_orphans"]), runs
    assert runs["CachewardenOpcacheStaleScripts"] == ("verified", ["opcache.invalidate"]), runs
    assert all(result == "verified" for result, _ in runs.values()), runs

    wait_for(lambda: all(demo.value(name) == 0 for name in HEALTHY_AT_ZERO), timeout=30,
             message="every view and OPcache signal of the demo healthy")
    check = subprocess.run([sys.executable, "-m", "exporter", "check", "--config.file",
                            str(demo.root / "cachewarden.yaml")], capture_output=True, text=True, timeout=60)
    problems = [line.strip() for line in check.stdout.splitlines() if line.strip().startswith("FAIL")]
    # Nothing stale anywhere. A new process that first looks now cannot order the revision file's
    # fresh compile (the agent's own include, after the invalidation) against the deploy: with
    # validate_timestamps=0 OPcache keeps no compile time, so it may only call it suspect (the serving
    # sidecar, which saw the recompile, says 0 above).
    assert all(p.startswith("FAIL opcache.suspect: 1 cached script(s)") for p in problems), check.stdout


def test_a_second_setup_stops_the_first_pool_and_rebuilds_the_demo(demo: Demo) -> None:
    first = demo.fpm_pid()
    deploy(demo)
    result = setup(demo.root)
    assert f"stopped the previous demo pool (pid {first})" in result.stdout
    assert not Path(f"/proc/{first}").exists()
    second = demo.fpm_pid()
    assert second != first
    masters = subprocess.run(["pgrep", "-f", f"master process \\({demo.root}/fpm/php-fpm.conf\\)"],
                             capture_output=True, text=True, check=False).stdout.split()
    assert masters == [str(second)]
    assert "serves: demo app, revision v1" in result.stdout, "rebuilt from scratch: release v1 again"
