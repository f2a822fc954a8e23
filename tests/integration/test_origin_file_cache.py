"""The incident that started it, end to end on real servers: a late `99-…ini` sets
validate_timestamps=0, the file cache is on, code changes, PHP-FPM is restarted and still serves the old
code. `cachewarden check` names the cause, the shipped alert fires in a real Prometheus, Alertmanager
calls /heal, and the heal fixes it without restarting FPM: FPM serves the new code."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_loop import TOKEN, rules_with_short_for, shipped_alertmanager_config
from tests.support.alertmanager import run_alertmanager
from tests.support.phpfpm import require_fpm, start_fpm
from tests.support.prometheus import Prometheus, run_cachewarden, run_prometheus
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0
LONG_AGO = time.time() - 3600
LATE_INI = "99-opcache-optimization.ini"


def value(prometheus: Prometheus, expr: str) -> float | None:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else None


def test_code_served_old_after_a_restart_is_named_alerted_and_healed_without_a_restart(
        tmp_path: Path) -> None:
    require_fpm()
    file_cache = tmp_path / "opcache"
    file_cache.mkdir()
    fpm = start_fpm(tmp_path / "fpm", opcache={"opcache.file_cache": str(file_cache)},
                    conf_d={LATE_INI: "opcache.validate_timestamps=0\n"})
    try:
        page = fpm.script("page.php", "<?php echo 'release v1';\n", mtime=LONG_AGO)
        assert fpm.get_sync("page.php").body == b"release v1"
        entry_written = max(p.stat().st_mtime for p in file_cache.rglob("page.php.bin"))
        wait_for(lambda: time.time() > math.floor(entry_written) + 4, message="clock past the entry")
        page.write_text("<?php echo 'release v2';\n")
        deployed = math.floor(time.time()) - 3
        os.utime(page, (deployed, deployed))
        fpm.restart()  # what the on-call did that evening
        assert fpm.get_sync("page.php").body == b"release v1", "old code after a restart"
        assert fpm.process is not None
        master = fpm.process.pid

        token = tmp_path / "heal-token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        config: dict[str, Any] = {
            "collectors": {"fpm": {"enabled": False}, "opcache": {"interval": "1s", "timeout": "1s"},
                           "app_stats": {"enabled": False}},
            "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                         "pool_config": str(fpm.pool_config)}],
            "heal": {"token_file": str(token), "token_env": "CACHEWARDEN_ORIGIN_TEST_NO_SUCH_VARIABLE"},
        }
        config_file = tmp_path / "cachewarden.yaml"
        config_file.write_text(yaml.safe_dump(config))

        argv = [sys.executable, "-m", "exporter", "check", "--config.file", str(config_file)]
        check = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert check.returncode == 1, check.stdout + check.stderr
        late = str(fpm.conf_d / LATE_INI)
        assert f"validate_timestamps=0 set by {late}" in check.stdout, check.stdout
        assert "survives opcache_reset() and FPM restarts" in check.stdout
        assert str(page) in check.stdout
        assert "no cached script is known to be older than its source" not in check.stdout

        rules = rules_with_short_for(tmp_path / "rendered")
        with run_cachewarden(config, tmp_path / "cachewarden") as served:
            am_config = shipped_alertmanager_config(f"{served.url}/heal", token)
            with run_alertmanager(am_config, tmp_path / "alertmanager") as am, run_prometheus(
                    tmp_path / "prometheus", scrape=[served.address], rule_files=rules,
                    alertmanager=am.address) as prometheus:
                start_time = wait_for(lambda: value(prometheus, "cachewarden_opcache_start_time_seconds"),
                                      timeout=DEADLINE, message="OPcache measured")
                firing = wait_for(lambda: prometheus.firing("CachewardenOpcacheFileCacheStale"),
                                  timeout=DEADLINE, message="CachewardenOpcacheFileCacheStale firing")
                assert firing[0]["labels"]["target"] == "www"
                healed = 'sum(cachewarden_heal_runs_total{action="opcache.invalidate", result="verified"})'
                wait_for(lambda: (value(prometheus, healed) or 0) >= 1, timeout=DEADLINE,
                         message="a verified opcache.invalidate run, started by Alertmanager")
                assert fpm.get_sync("page.php").body == b"release v2", "FPM serves the new code"
                wait_for(lambda: value(prometheus, "cachewarden_opcache_file_cache_stale") == 0
                         and value(prometheus, "cachewarden_opcache_scripts_stale") == 0,
                         timeout=DEADLINE, message="file cache and shared memory healthy again")
                wait_for(lambda: not prometheus.firing("CachewardenOpcacheFileCacheStale"),
                         timeout=DEADLINE, message="CachewardenOpcacheFileCacheStale resolved")
                # Healed inside the running pool: no restart of FPM, no reset of OPcache.
                assert value(prometheus, "cachewarden_opcache_start_time_seconds") == start_time
                assert value(prometheus, 'cachewarden_opcache_restarts_total{cause="manual"}') == 0
                assert fpm.process is not None
                assert fpm.process.pid == master
        fpm.restart()
        assert fpm.get_sync("page.php").body == b"release v2", "and the fix survives a restart"
    finally:
        fpm.stop()
