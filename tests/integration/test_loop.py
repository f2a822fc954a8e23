"""The whole loop on real servers: measure, alert, route, heal, re-measure, resolve.

cachewarden (`serve`, its own process) watches a Laravel view tree compiled by Laravel's Blade compiler
and recompiles through a real php-fpm8.2 pool; Prometheus scrapes it every second and evaluates the
shipped rules rendered with 1 s `for:` durations; Alertmanager runs the shipped example configuration
(timings shortened) and calls /heal with the bearer token from a credentials file. The test makes views
stale and waits, with a deadline, for each step of the loop to happen by itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import ALERT_DEFAULTS, parse
from exporter.render import render_all, write_files
from tests.support.alertmanager import Alertmanager, run_alertmanager
from tests.support.blade import blade_unavailable, compile_views
from tests.support.phpfpm import require_fpm, start_fpm
from tests.support.prometheus import Cachewarden, Prometheus, run_cachewarden, run_prometheus
from tests.support.wait import wait_for

pytest.importorskip("exporter.heal.routes", reason="the /heal webhook (exporter.heal) is not available")

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "loop-test-heal-token"
LOOP_DEADLINE = 60.0  # seconds for each step; a 1 s scrape/eval/group interval needs a few of them
# Blade needs these; the test pool's private conf.d loads nothing by itself.
LARAVEL_EXTENSIONS = {"20-laravel.ini": "extension=tokenizer.so\nextension=ctype.so\nextension=mbstring.so\n"}
VIEWS = ("welcome", "orders/index", "orders/show")

pytestmark = pytest.mark.integration


@dataclass
class Loop:
    app: Path
    cachewarden: Cachewarden
    prometheus: Prometheus
    alertmanager: Alertmanager

    def source(self, name: str) -> Path:
        return self.app / "resources" / "views" / f"{name}.blade.php"


def laravel_app(root: Path) -> Path:
    views, compiled = root / "resources" / "views", root / "storage" / "framework" / "views"
    compiled.mkdir(parents=True)
    sources = []
    for name in VIEWS:
        path = views / f"{name}.blade.php"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<h1>{name} v1</h1> @if($n ?? 1) shown @endif\n")
        sources.append(path)
    # Settled long ago, each compiled view after its source (Laravel counts an equal mtime as expired).
    now = time.time()
    for age, paths in ((7200, sources), (3600, compile_views(compiled, sources))):
        for path in paths:
            os.utime(path, (now - age, now - age))
    return root


def rules_with_short_for(out: Path) -> list[Path]:
    """The shipped templates, rendered as a user would with a config that shortens every `for:`."""
    alerts = parse({"alerts": {"rules": {name: {"for": "1s"} for name in ALERT_DEFAULTS}}}).alerts
    write_files(render_all(alerts), out)
    return sorted((out / "alerts").glob("*.yml"))


def shipped_alertmanager_config(heal_url: str, credentials_file: Path) -> dict[str, Any]:
    """examples/alertmanager.yml with the webhook pointed at this cachewarden and 1 s timings."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "alertmanager.yml").read_text())
    for route in (config["route"], *config["route"]["routes"]):
        route.update(group_wait="1s", group_interval="1s")
    webhook = next(r for r in config["receivers"] if r["name"] == "cachewarden-heal")["webhook_configs"][0]
    webhook["url"] = heal_url
    webhook["http_config"]["authorization"]["credentials_file"] = str(credentials_file)
    return config


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    if (why := blade_unavailable()) is not None:
        pytest.skip(why)
    require_fpm()
    app = laravel_app(tmp_path / "shop")
    token = tmp_path / "heal-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    fpm = start_fpm(tmp_path / "fpm", conf_d=LARAVEL_EXTENSIONS)
    try:
        config = {
            "collectors": {"views": {"interval": "1s", "timeout": "1s"}},
            "laravel": [{"name": "shop", "root": str(app)}],
            "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                         "laravel": "shop"}],
            "heal": {"token_file": str(token), "token_env": "CACHEWARDEN_LOOP_TEST_NO_SUCH_VARIABLE"},
        }
        # Only the loop's subsystem runs, so nothing else can fire and muddy the routing.
        switches = {"fpm": False, "opcache": False, "redis": False, "sql": False, "app_stats": False}
        config["collectors"].update({k: {"enabled": on} for k, on in switches.items()})
        rules = rules_with_short_for(tmp_path / "rendered")
        with run_cachewarden(config, tmp_path / "cachewarden") as served:
            am_config = shipped_alertmanager_config(f"{served.url}/heal", token)
            with run_alertmanager(am_config, tmp_path / "alertmanager") as am, run_prometheus(
                tmp_path / "prometheus", scrape=[served.address], rule_files=rules, alertmanager=am.address
            ) as prometheus:
                yield Loop(app, served, prometheus, am)
    finally:
        fpm.stop()


def value(prometheus: Prometheus, expr: str) -> float | None:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else None


def test_stale_views_fire_an_alert_that_heal_fixes_and_the_alert_resolves(loop: Loop) -> None:
    prom = loop.prometheus
    stale = 'cachewarden_views_stale{target="shop"}'
    recompiles = 'sum(cachewarden_heal_runs_total{action="views.recompile", result="verified"})'

    wait_for(lambda: value(prom, stale) == 0, timeout=LOOP_DEADLINE, message="healthy views scraped")
    assert prom.firing("CachewardenViewsStale") == []
    assert value(prom, recompiles) == 0, "nothing to heal yet"

    # A deploy changes two views on disk; their compiled files are now older than the sources.
    for name in ("welcome", "orders/show"):
        loop.source(name).write_text(f"<h1>{name} v2</h1> @if($n ?? 1) shown @endif\n")

    wait_for(lambda: value(prom, stale) == 2, timeout=LOOP_DEADLINE, message="Prometheus sees 2 stale views")
    firing = wait_for(lambda: prom.firing("CachewardenViewsStale"), timeout=LOOP_DEADLINE,
                      message="CachewardenViewsStale firing")
    assert firing[0]["labels"]["target"] == "shop"
    assert firing[0]["annotations"]["runbook_url"].endswith("/docs/runbooks/CachewardenViewsStale.md")

    # Alertmanager routes it to /heal with the token, which recompiles and verifies by re-measuring.
    wait_for(lambda: (value(prom, recompiles) or 0) >= 1, timeout=LOOP_DEADLINE,
             message="a verified views.recompile run, started by Alertmanager")
    wait_for(lambda: value(prom, stale) == 0, timeout=LOOP_DEADLINE, message="views healthy again")
    wait_for(lambda: not prom.firing("CachewardenViewsStale"), timeout=LOOP_DEADLINE,
             message="CachewardenViewsStale resolved in Prometheus")
    wait_for(lambda: not [a for a in loop.alertmanager.alerts()
                          if a["labels"]["alertname"] == "CachewardenViewsStale"
                          and a["status"]["state"] == "active"],
             timeout=LOOP_DEADLINE, message="CachewardenViewsStale resolved in Alertmanager")

    compiled = (loop.app / "storage" / "framework" / "views").glob("*.php")
    texts = [p.read_text() for p in compiled]
    assert sum("welcome v2" in t for t in texts) == 1, "the changed view was really recompiled"
    assert sum("orders/show v2" in t for t in texts) == 1
    assert not any(" v1<" in t and ("welcome" in t or "orders/show" in t) for t in texts)
    # Refused requests would show here: the only caller was Alertmanager, with the right token.
    refused = prom.query('cachewarden_heal_requests_total{outcome=~"unauthorized|forbidden"} > 0')
    assert refused == []
