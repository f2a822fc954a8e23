"""Every dashboard query, run by a real Prometheus against a real cachewarden measuring real servers.

cachewarden serves a Laravel view tree compiled by Laravel's own Blade compiler, a php-fpm8.2 pool with
OPcache, the Redis on 127.0.0.1:6379 and a private MariaDB with performance_schema (for statement
digests), plus /heal; Prometheus scrapes it every second with the shipped rules. A panel whose query
stays empty would be an empty panel in Grafana, so each must return data within a few scrapes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.blade import blade_unavailable, compile_views
from tests.support.mariadb import missing_binary, start_private_mariadb
from tests.support.phpfpm import require_fpm, start_fpm
from tests.support.prometheus import Prometheus, run_cachewarden, run_prometheus
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
# What Grafana substitutes when "All" is selected and for its built-in interval, at a 1 s scrape.
VARIABLES = {"$job": ".+", "$target": ".+", "$__rate_interval": "1m", "$__interval": "15s"}

pytestmark = pytest.mark.integration


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def panel_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            out.extend((f"{board['uid']} / {panel['title']}", t["expr"]) for t in panel.get("targets", []))
    return out


def annotation_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        out.extend((f"{board['uid']} / {a['name']}", a["expr"])
                   for a in board["annotations"]["list"] if "expr" in a)
    return out


def laravel_app(root: Path) -> Path:
    views, compiled = root / "resources" / "views", root / "storage" / "framework" / "views"
    views.mkdir(parents=True)
    compiled.mkdir(parents=True)
    sources = []
    for name in ("welcome", "layouts/app", "orders/index"):
        path = views / f"{name}.blade.php"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<h1>{{{{ $title ?? '{name}' }}}}</h1>\n@if(true) ok @endif\n")
        sources.append(path)
    compile_views(compiled, sources)
    return root


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Prometheus]:
    if (why := blade_unavailable()) is not None:
        pytest.skip(why)
    require_fpm()
    if (binary := missing_binary()) is not None:
        pytest.skip(f"{binary} is not installed (apt-get install mariadb-server)")
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379 (scripts/start-services starts one)")

    app = laravel_app(tmp_path / "shop")
    fpm = start_fpm(tmp_path / "fpm", opcache={"opcache.validate_timestamps": 1})
    mariadb = None
    try:
        revision = fpm.docroot / "REVISION"
        revision.write_text("4f2a9c1\n")
        fpm.script("index.php", "<?php echo 'hello';\n")
        fpm.get_sync("index.php")  # something in OPcache, so hits and cached scripts are not all zero
        mariadb = start_private_mariadb(tmp_path / "mariadb")
        mariadb.sql("CREATE DATABASE IF NOT EXISTS shop; CREATE TABLE IF NOT EXISTS shop.orders (id INT);"
                    "SELECT COUNT(*) FROM shop.orders")
        token = tmp_path / "heal-token"
        token.write_text("dashboard-test-token\n")
        token.chmod(0o600)
        every_second = {"interval": "1s", "timeout": "1s"}
        config: dict[str, Any] = {
            "collectors": {k: every_second for k in ("views", "fpm", "opcache", "redis", "sql")},
            "laravel": [{"name": "shop", "root": str(app)}],
            "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                         "pool_config": str(fpm.pool_config), "revision_file": str(revision)}],
            "redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0"}],
            "databases": [{"name": "main", "url": mariadb.url(database="shop")}],
            "heal": {"token_file": str(token)},
        }
        rules = sorted((ROOT / "alerts").glob("*.yml"))
        with run_cachewarden(config, tmp_path / "cachewarden") as served, run_prometheus(
            tmp_path / "prometheus", scrape=[served.address], rule_files=rules
        ) as prometheus:
            # A little traffic, so that rates and ratios have something to divide.
            client.set("cachewarden:dashboard-test", "1", ex=60)
            for _ in range(5):
                client.get("cachewarden:dashboard-test")
                client.get("cachewarden:dashboard-test:missing")
            yield prometheus
    finally:
        fpm.stop()
        if mariadb is not None:
            mariadb.stop()
        shutil.rmtree(tmp_path / "prometheus" / "data", ignore_errors=True)


def test_every_panel_query_returns_data_from_a_real_prometheus(stack: Prometheus) -> None:
    queries = panel_queries()
    assert len(queries) > 50

    def empty_panels() -> list[str]:
        return [f"{title}: {expr}" for title, expr in queries if not stack.query(substitute(expr))]

    def all_have_data() -> bool:
        return not empty_panels()

    wait_for(lambda: stack.target_health() == ["up"], timeout=30, message="cachewarden scraped")
    try:
        wait_for(all_have_data, timeout=90, interval=1.0, message="every panel has data")
    except AssertionError:
        pytest.fail("panels without data:\n" + "\n".join(empty_panels()))


def test_annotation_queries_and_shipped_rules_evaluate_without_errors(stack: Prometheus) -> None:
    for title, expr in annotation_queries():
        stack.query(substitute(expr))  # raises with Prometheus' error on a query it rejects, by title
        assert title
    wait_for(lambda: all(h == "ok" for _, h, _ in stack.rule_health()), timeout=30, interval=0.5,
             message="every shipped rule evaluated successfully")
    unhealthy = [r for r in stack.rule_health() if r[1] != "ok"]
    assert unhealthy == []
