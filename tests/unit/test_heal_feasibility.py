"""Heal plans that cannot run show at start (check, serve's log, GET /heal); unambiguous pools are linked."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.cli import EXIT_OK, EXIT_PROBLEMS, main
from exporter.config import parse
from exporter.heal.feasibility import judge
from exporter.heal.plans import resolve_plans
from tests.support.healing import AUTH, make_app_dir, token_file

Client = TestClient[web.Request, web.Application]


def _config(tmp_path: Path, apps: list[str], pools: list[dict[str, Any]], **heal: Any) -> dict[str, Any]:
    return {
        "laravel": [{"name": a, "root": str(make_app_dir(tmp_path / a))} for a in apps],
        "php_fpm": [{"address": f"unix:{tmp_path}/{p['name']}.sock", "agent_dir": str(tmp_path), **p}
                    for p in pools],
        "heal": {"token_file": str(token_file(tmp_path)), "token_env": "CACHEWARDEN_TEST_NO_SUCH_VARIABLE",
                 **heal},
    }


def test_the_only_pool_of_the_only_app_is_linked_to_it_and_says_why(tmp_path: Path) -> None:
    # One app, one pool that does not name it, no heal.php_cli: views.recompile used to fail only when run.
    config = parse(_config(tmp_path, ["shop"], [{"name": "www"}]))
    (pool,) = config.php_fpm
    assert pool.laravel == "shop"
    assert pool.linked_because == "the only Laravel app and the only php_fpm pool"
    feasible = judge(config, resolve_plans(config.heal), enabled=True)
    assert feasible.problems == ()
    assert ("views.recompile", "shop") not in feasible.blocked
    assert feasible.notes[0] == ("php_fpm[www] is linked to laravel[shop]: the only Laravel app and the "
                                 "only php_fpm pool")


def test_a_pool_is_linked_to_the_app_whose_root_its_chdir_lies_in(tmp_path: Path) -> None:
    pool_file = tmp_path / "www.conf"
    pool_file.write_text(f"[www]\nlisten = x.sock\nchdir = {tmp_path}/blog/public\n")
    config = parse(_config(tmp_path, ["shop", "blog"], [{"name": "www", "pool_config": str(pool_file)}]))
    assert config.php_fpm[0].laravel == "blog"
    assert config.php_fpm[0].linked_because == (
        f"chdir in {pool_file} is {tmp_path}/blog/public, inside its root {tmp_path}/blog")


def test_an_ambiguous_pool_stays_unlinked_and_the_plans_it_would_serve_are_problems(tmp_path: Path) -> None:
    config = parse(_config(tmp_path, ["shop", "blog"], [{"name": "www"}]))
    assert config.php_fpm[0].laravel is None
    feasible = judge(config, resolve_plans(config.heal), enabled=True)
    why = ("no PHP to compile the views of 'shop' with: no php_fpm target is linked to it "
           "(php_fpm[].laravel) and heal.php_cli is not set")
    assert feasible.blocked[("views.recompile", "shop")].why == why
    assert f"heal plan CachewardenViewsStale cannot run on 'shop': {why}" in feasible.problems
    assert not any("CachewardenViewsOrphaned" in p for p in feasible.problems)
    # heal.php_cli is a way to compile: the plans can run again.
    with_cli = parse(_config(tmp_path / "2", ["shop", "blog"], [{"name": "www"}], php_cli="/bin/true"))
    assert judge(with_cli, resolve_plans(with_cli.heal), enabled=True).problems == ()


def test_check_fails_naming_the_plan_that_cannot_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    data = _config(tmp_path, ["shop", "blog"], [])
    path = tmp_path / "cachewarden.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check", "--config.file", str(path), "--no-collector.views",
                 "--no-collector.laravel_caches"]) == EXIT_PROBLEMS
    out = capsys.readouterr().out
    assert "  FAIL heal plan CachewardenViewsUncompiled cannot run on 'blog': no PHP to compile" in out
    data["heal"]["php_cli"] = "/bin/true"
    path.write_text(yaml.safe_dump(data))
    assert main(["check", "--config.file", str(path), "--no-collector.views",
                 "--no-collector.laravel_caches"]) == EXIT_OK


async def test_serve_logs_the_problem_and_get_heal_says_why_per_action_and_target(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]],
        caplog: pytest.LogCaptureFixture) -> None:
    config = parse(_config(tmp_path, ["shop", "blog"], [{"name": "www", "restart_command": ["/bin/true"]}]))
    with caplog.at_level(logging.WARNING, logger="exporter.heal.routes"):
        client = await aiohttp_client(create_app(config, run_collectors=False))
    logged = [r.getMessage() for r in caplog.records]
    assert any("heal plan CachewardenViewsStale cannot run on 'blog'" in m for m in logged)
    body = await (await client.get("/heal", headers=AUTH)).json()
    recompile = body["actions"]["views.recompile"]["targets"]
    assert recompile["shop"]["runnable"] is False
    assert "no PHP to compile the views of 'shop'" in recompile["shop"]["why"]
    assert body["actions"]["views.remove_orphans"]["targets"]["shop"] == {"runnable": True}
    assert body["actions"]["fpm.reload"]["targets"]["www"] == {"runnable": True}
    assert any("CachewardenViewsUncompiled cannot run on 'shop'" in p for p in body["problems"])
