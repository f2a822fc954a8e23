"""The whole loop on real servers: measure, alert, route, heal, re-measure, resolve; then every dashboard.

cachewarden (`serve`, its own process) watches a Laravel view tree compiled by Laravel's Blade compiler,
a php-fpm8.2 pool with OPcache (validate_timestamps=0, so a changed file keeps being served old), the
Redis on 127.0.0.1:6379 and a private MariaDB with performance_schema. Prometheus scrapes it every second
and evaluates the shipped rules rendered with 1 s `for:` durations; Alertmanager runs the shipped example
configuration (timings shortened) and calls /heal with the bearer token from a credentials file. The
tests break views or deploy PHP code past OPcache and wait, with a deadline, for each step of the loop to
happen by itself. At the end, that same Prometheus runs every query of every shipped dashboard.
"""

from __future__ import annotations

import os
import subprocess
import threading
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
from tests.support.mariadb import PrivateMariaDB, missing_binary, start_private_mariadb
from tests.support.phpfpm import Fpm, require_fpm, start_fpm
from tests.support.processes import stop_process
from tests.support.prometheus import (
    Cachewarden,
    Prometheus,
    dashboard_queries,
    grafana_substitute,
    panel_problems,
    run_cachewarden,
    run_prometheus,
)
from tests.support.wait import free_port, wait_for

pytest.importorskip("exporter.heal.routes", reason="the /heal webhook (exporter.heal) is not available")

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "loop-test-heal-token"
LOOP_DEADLINE = 60.0  # seconds for each step; a 1 s scrape/eval/group interval needs a few of them
# Blade needs these; the test pool's private conf.d loads nothing by itself.
LARAVEL_EXTENSIONS = {"20-laravel.ini": "extension=tokenizer.so\nextension=ctype.so\nextension=mbstring.so\n"}
VIEWS = ("welcome", "orders/index", "orders/show")
LONG_AGO = time.time() - 7200

pytestmark = pytest.mark.integration


@dataclass
class Loop:
    app: Path
    fpm: Fpm
    page: Path  # a PHP script FPM serves
    revision: Path  # the PHP revision file (`return 'v1';`) the opcache collector compares
    redis: Any
    mariadb: PrivateMariaDB
    cachewarden: Cachewarden
    prometheus: Prometheus
    alertmanager: Alertmanager

    def source(self, name: str) -> Path:
        return self.app / "resources" / "views" / f"{name}.blade.php"

    def value(self, expr: str) -> float | None:
        result = self.prometheus.query(expr)
        return float(result[0]["value"][1]) if result else None

    def active_in_alertmanager(self, alertname: str) -> list[dict[str, Any]]:
        return [a for a in self.alertmanager.alerts()
                if a["labels"]["alertname"] == alertname and a["status"]["state"] == "active"]


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
    # A config cache as `config:cache` writes it for an app without config files: healthy, and the
    # bootstrap-cache panels have their series.
    cached_config = root / "bootstrap" / "cache" / "config.php"
    cached_config.parent.mkdir(parents=True)
    cached_config.write_text("<?php return array (\n);\n")
    for age, paths in ((7200, sources), (3600, [*compile_views(compiled, sources), cached_config])):
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
    webhook["http_config"].pop("tls_config")  # this cachewarden serves plain HTTP (no --web.config.file)
    return config


def redis_client() -> Any:
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379 (scripts/start-services starts one)")
    return client


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    if (why := blade_unavailable()) is not None:
        pytest.skip(why)
    require_fpm()
    if (binary := missing_binary()) is not None:
        pytest.skip(f"{binary} is not installed (apt-get install mariadb-server)")
    client = redis_client()
    app = laravel_app(tmp_path / "shop")
    token = tmp_path / "heal-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    # validate_timestamps=0: what made the original incident. file_update_protection=0 so that a file
    # rewritten by the test is cached as soon as FPM loads it, as one deployed seconds earlier would be.
    # TCP, because the listen queue (a dashboard panel) is measured only there.
    # The file cache is on, as in the incident: what a deploy changes must leave it too.
    file_cache = tmp_path / "opcache-file-cache"
    file_cache.mkdir()
    fpm = start_fpm(tmp_path / "fpm", conf_d=LARAVEL_EXTENSIONS, tcp=True, opcache={
        "opcache.validate_timestamps": 0, "opcache.file_update_protection": 0,
        "opcache.file_cache": str(file_cache)})
    mariadb = None
    # A second Redis with a maxmemory limit: the shared one has none, and an unlimited server exports no
    # cachewarden_redis_max_memory_bytes at all, so only a limited one shows that panel query works.
    limited_port = free_port()
    limited = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(limited_port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--maxmemory", "64mb"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        page = fpm.script("page.php", "<?php echo 'release v1';\n", mtime=LONG_AGO)
        revision = fpm.script("revision.php", "<?php return 'v1';\n", mtime=LONG_AGO)
        mariadb = start_private_mariadb(tmp_path / "mariadb")
        mariadb.sql("CREATE DATABASE IF NOT EXISTS shop; CREATE TABLE IF NOT EXISTS shop.orders (id INT);"
                    "SELECT COUNT(*) FROM shop.orders")
        every_second = {"interval": "1s", "timeout": "1s"}
        # An FPM collection must outlast connect_timeout + status_timeout, which it waits on a busy pool.
        every_2s = {"interval": "2s", "timeout": "2s"}
        config: dict[str, Any] = {
            "collectors": {"views": every_second, "redis": every_second, "sql": every_second,
                           "fpm": every_2s, "opcache": every_2s},
            "laravel": [{"name": "shop", "root": str(app)}],
            "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                         "pool_config": str(fpm.pool_config), "revision_file": str(revision),
                         "laravel": "shop", "connect_timeout": "0.5s", "status_timeout": "1s"}],
            "redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0"},
                      {"name": "limited", "url": f"redis://127.0.0.1:{limited_port}/0"}],
            "databases": [{"name": "main", "url": mariadb.url(database="shop")}],
            "heal": {"token_file": str(token), "token_env": "CACHEWARDEN_LOOP_TEST_NO_SUCH_VARIABLE"},
        }
        config["collectors"]["app_stats"] = {"enabled": False}
        rules = rules_with_short_for(tmp_path / "rendered")
        with run_cachewarden(config, tmp_path / "cachewarden") as served:
            am_config = shipped_alertmanager_config(f"{served.url}/heal", token)
            with run_alertmanager(am_config, tmp_path / "alertmanager") as am, run_prometheus(
                tmp_path / "prometheus", scrape=[served.address], rule_files=rules, alertmanager=am.address
            ) as prometheus:
                yield Loop(app, fpm, page, revision, client, mariadb, served, prometheus, am)
    finally:
        fpm.stop()
        stop_process(limited)
        if mariadb is not None:
            mariadb.stop()


def assert_alertmanager_called_heal_with_the_token(loop: Loop) -> None:
    accepted = 'sum(cachewarden_heal_requests_total{outcome="accepted"})'
    started = 'sum(cachewarden_heal_alerts_total{decision="started"})'
    wait_for(lambda: (loop.value(accepted) or 0) >= 1 and (loop.value(started) or 0) >= 1,
             timeout=LOOP_DEADLINE, message="/heal accepted Alertmanager's request and started a run")
    # Refused requests would show here: the only caller was Alertmanager, with the right token.
    refused = loop.prometheus.query('cachewarden_heal_requests_total{outcome=~"unauthorized|forbidden"} > 0')
    assert refused == []


def wait_resolved(loop: Loop, alertname: str) -> None:
    wait_for(lambda: not loop.prometheus.firing(alertname), timeout=LOOP_DEADLINE,
             message=f"{alertname} resolved in Prometheus")
    wait_for(lambda: not loop.active_in_alertmanager(alertname), timeout=LOOP_DEADLINE,
             message=f"{alertname} resolved in Alertmanager")


def test_stale_views_fire_an_alert_that_heal_fixes_and_the_alert_resolves(loop: Loop) -> None:
    prom = loop.prometheus
    stale = 'cachewarden_views_stale{target="shop"}'
    recompiles = 'sum(cachewarden_heal_runs_total{action="views.recompile", result="verified"})'

    wait_for(lambda: loop.value(stale) == 0, timeout=LOOP_DEADLINE, message="healthy views scraped")
    assert prom.firing("CachewardenViewsStale") == []
    assert loop.value(recompiles) == 0, "nothing to heal yet"

    # A deploy changes two views on disk; their compiled files are now older than the sources.
    for name in ("welcome", "orders/show"):
        loop.source(name).write_text(f"<h1>{name} v2</h1> @if($n ?? 1) shown @endif\n")

    wait_for(lambda: loop.value(stale) == 2, timeout=LOOP_DEADLINE, message="Prometheus sees 2 stale views")
    firing = wait_for(lambda: prom.firing("CachewardenViewsStale"), timeout=LOOP_DEADLINE,
                      message="CachewardenViewsStale firing")
    assert firing[0]["labels"]["target"] == "shop"
    assert firing[0]["annotations"]["runbook_url"].endswith("/docs/runbooks/CachewardenViewsStale.md")

    # Alertmanager routes it to /heal with the token, which recompiles and verifies by re-measuring.
    wait_for(lambda: (loop.value(recompiles) or 0) >= 1, timeout=LOOP_DEADLINE,
             message="a verified views.recompile run, started by Alertmanager")
    assert_alertmanager_called_heal_with_the_token(loop)
    wait_for(lambda: loop.value(stale) == 0, timeout=LOOP_DEADLINE, message="views healthy again")
    wait_resolved(loop, "CachewardenViewsStale")

    compiled = (loop.app / "storage" / "framework" / "views").glob("*.php")
    texts = [p.read_text() for p in compiled]
    assert sum("welcome v2" in t for t in texts) == 1, "the changed view was really recompiled"
    assert sum("orders/show v2" in t for t in texts) == 1
    assert not any(" v1<" in t and ("welcome" in t or "orders/show" in t) for t in texts)


def test_opcache_drift_fires_heal_invalidates_fpm_serves_the_new_code_and_every_panel_has_data(
        loop: Loop) -> None:
    prom = loop.prometheus
    stale = 'cachewarden_opcache_scripts_stale{target="www"}'
    drift = 'cachewarden_code_revision_drift{target="www"}'
    invalidations = ('sum(cachewarden_heal_runs_total{action=~"opcache.invalidate|opcache.reset", '
                     'result="verified"})')

    assert loop.fpm.get_sync("page.php").body == b"release v1"
    # Both files are in FPM's OPcache (the revision through the collector's own include) and a
    # collection has seen them cached: from here on, a change on disk is certainly after caching.
    cached = 'cachewarden_opcache_cached_scripts{target="www"}'
    wait_for(lambda: loop.value(stale) == 0 and loop.value(drift) == 0 and (loop.value(cached) or 0) >= 2
             and loop.value(f'min_over_time({cached}[2s])') == loop.value(cached),
             timeout=LOOP_DEADLINE, message="OPcache healthy, with page.php and the revision cached")
    assert prom.firing("CachewardenOpcacheStaleScripts") == []
    assert prom.firing("CachewardenCodeRevisionDrift") == []
    assert (loop.value(invalidations) or 0) == 0, "nothing to heal yet"

    # A deploy rewrites the page and the revision in place; FPM keeps serving the cached old code.
    deployed_at = time.time()
    for path, text in ((loop.page, "<?php echo 'release v2';\n"), (loop.revision, "<?php return 'v2';\n")):
        path.write_text(text)
        os.utime(path, (deployed_at, deployed_at))
    assert loop.fpm.get_sync("page.php").body == b"release v1", "validate_timestamps=0 serves the old code"

    wait_for(lambda: (loop.value(stale) or 0) >= 1, timeout=LOOP_DEADLINE, message="stale scripts measured")
    firing = wait_for(lambda: prom.firing("CachewardenOpcacheStaleScripts"), timeout=LOOP_DEADLINE,
                      message="CachewardenOpcacheStaleScripts firing")
    assert firing[0]["labels"]["target"] == "www"
    drifting = wait_for(lambda: prom.firing("CachewardenCodeRevisionDrift"), timeout=LOOP_DEADLINE,
                        message="CachewardenCodeRevisionDrift firing")
    assert "runs code revision v1 while the disk holds v2" in drifting[0]["annotations"]["description"]

    wait_for(lambda: (loop.value(invalidations) or 0) >= 1, timeout=LOOP_DEADLINE,
             message="a verified opcache.invalidate/opcache.reset run, started by Alertmanager")
    assert_alertmanager_called_heal_with_the_token(loop)
    assert loop.fpm.get_sync("page.php").body == b"release v2", "FPM serves the deployed code"
    file_cache_stale = 'cachewarden_opcache_file_cache_stale{target="www"}'
    wait_for(lambda: loop.value(stale) == 0 and loop.value(drift) == 0 and loop.value(file_cache_stale) == 0,
             timeout=LOOP_DEADLINE, message="OPcache and its file cache healthy again")
    wait_resolved(loop, "CachewardenOpcacheStaleScripts")
    wait_resolved(loop, "CachewardenCodeRevisionDrift")

    check_every_dashboard_query(loop)


def cache_traffic(loop: Loop, stop: threading.Event) -> None:
    """About 20 Redis and 10 OPcache lookups a second until `stop` is set, some of them misses."""
    loop.redis.set("cachewarden:loop-test", "1", ex=300)
    while not stop.wait(0.1):
        loop.redis.get("cachewarden:loop-test")
        loop.redis.get("cachewarden:loop-test:missing")
        loop.fpm.get_sync("page.php")


def check_every_dashboard_query(loop: Loop) -> None:
    """Every panel of every shipped dashboard, run by the loop's Prometheus: data, and finite."""
    prom = loop.prometheus
    # Traffic only once Prometheus holds two samples of each counter, so that rates have a before.
    for counter in ("cachewarden_redis_keyspace_hits_total", "cachewarden_opcache_hits_total"):
        wait_for(lambda c=counter: (loop.value(f"min(count_over_time({c}[1m]))") or 0) >= 2,  # type: ignore[misc]
                 timeout=LOOP_DEADLINE, message=f"two scrapes of {counter}")
    loop.mariadb.sql("SELECT COUNT(*) FROM shop.orders WHERE id > 3")
    queries = dashboard_queries()
    assert len(queries) > 50
    # Steady traffic while the panels are read: a hit ratio is recorded only above min_lookup_rate
    # lookups per second over 5 minutes, and a single burst would fade below it.
    stop = threading.Event()
    traffic = threading.Thread(target=cache_traffic, args=(loop, stop), daemon=True)
    traffic.start()
    try:
        wait_for(lambda: not panel_problems(prom, queries), timeout=90, interval=1.0,
                 message="every panel has finite data")
    except AssertionError:
        pytest.fail("panels Grafana would show broken:\n" + "\n".join(panel_problems(prom, queries)))
    finally:
        stop.set()
        traffic.join(timeout=10)
    for title, expr in dashboard_queries(annotations=True):
        prom.query(grafana_substitute(expr))  # raises with Prometheus' error on a query it rejects
        assert title
    unhealthy = [r for r in prom.rule_health() if r[1] != "ok"]
    assert unhealthy == []
