"""The heal is assembled once, for `serve` and the CLI alike, over the PHP-FPM registry the collectors use."""

from __future__ import annotations

import ast
from pathlib import Path

from exporter.app import SCHEDULER, create_app
from exporter.collectors.fpm import FpmCollector
from exporter.collectors.opcache import OpcacheCollector
from exporter.config import parse
from exporter.heal.routes import HEAL_RUNNER
from tests.support.healing import make_app_dir

HEAL = Path(__file__).parents[2] / "exporter" / "heal"


def test_the_heal_reaches_each_pool_through_the_collectors_endpoint(tmp_path: Path) -> None:
    # The endpoint's lock is what keeps cachewarden to one FPM worker: heal and collectors must share it.
    config = parse({"laravel": [{"name": "shop", "root": str(make_app_dir(tmp_path / "shop"))}],
                    "php_fpm": [{"name": "www", "address": f"unix:{tmp_path}/www.sock",
                                 "agent_dir": str(tmp_path)}]})
    app = create_app(config, run_collectors=False)
    fpm = next(c for c in app[SCHEDULER].collectors if isinstance(c, FpmCollector))
    opcache = next(c for c in app[SCHEDULER].collectors if isinstance(c, OpcacheCollector))
    heal_php = app[HEAL_RUNNER].actions["views.recompile"].ctx.php
    pool = config.php_fpm[0]
    assert heal_php.fpm.agent(pool, 1.0).endpoint is fpm.endpoint is opcache.agent.endpoint


def test_no_heal_module_imports_a_collector_class() -> None:
    # Collaborators are handed in by the assembly (exporter/heal/assembly.py), never found by type.
    offenders = []
    for path in HEAL.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("exporter.collectors.") \
                    and any(a.name.endswith("Collector") for a in node.names):
                offenders.append(f"{path.name}: {node.module}")
    assert offenders == []
