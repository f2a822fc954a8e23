"""The status page's heal runs on a private Redis: those `cachewarden heal` and other sidecars recorded in
the audit stream are listed with this process's own, and a stream that does not answer is said so."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.cli import main
from exporter.config import parse
from exporter.heal.routes import HEAL_RUNNER
from exporter.heal.token import read_heal_state
from tests.support.healing import an_hour_ago, make_app_dir, token_file, write_compiled
from tests.support.redis_server import PrivateRedis, private_redis

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


def runs_section(html: str) -> str:
    start = html.index('<section id="heal"')
    return html[start:html.index("</section>", start)]


def orphaned_app(root: Path) -> Path:
    app = make_app_dir(root)
    write_compiled(app, str(app / "resources/views/gone.blade.php"), mtime=an_hour_ago())
    return app


async def test_runs_of_the_heal_command_show_beside_the_servers_own(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    with private_redis(tmp_path) as redis:
        server: PrivateRedis = redis
        data = {"laravel": [{"name": "shop", "root": str(orphaned_app(tmp_path / "shop"))},
                            {"name": "blog", "root": str(orphaned_app(tmp_path / "blog"))}],
                "heal": {"token_file": str(token_file(tmp_path)), "redis_url": server.url}}
        config_file = tmp_path / "cachewarden.yaml"
        config_file.write_text(yaml.safe_dump(data))
        argv = ["heal", "views.remove_orphans", "--target", "shop", "--config.file", str(config_file)]
        assert await asyncio.to_thread(main, argv) == 0  # the command runs its own event loop
        config = parse(data)
        client = await aiohttp_client(create_app(config, run_collectors=False,
                                                 heal_state=read_heal_state(config.heal)))
        await client.server.app[HEAL_RUNNER].run_action(  # type: ignore[union-attr]
            "views.remove_orphans", "blog", False, "127.0.0.1")

        runs = runs_section(await (await client.get("/")).text())

    rows = runs.split("<tr>")[2:]  # past the header row
    assert len(rows) == 2, runs
    assert '<td data-label="target">blog</td>' in rows[0]
    assert "manual from 127.0.0.1" in rows[0]
    assert '<td data-label="target">shop</td>' in rows[1]
    assert "CLI (cachewarden heal)" in rows[1]
    assert all('<td data-label="result">verified</td>' in r for r in rows)
    assert "runs of this process only" not in runs


async def test_an_audit_stream_that_does_not_answer_is_said_so(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    # Nothing listens on port 1.
    config = parse({"laravel": [{"name": "shop", "root": str(orphaned_app(tmp_path / "shop"))}],
                    "heal": {"token_file": str(token_file(tmp_path)), "redis_url": "redis://127.0.0.1:1/0"}})
    client = await aiohttp_client(create_app(config, run_collectors=False,
                                             heal_state=read_heal_state(config.heal)))

    resp = await client.get("/")

    assert resp.status == 200
    assert "did not answer: runs of this process only" in runs_section(await resp.text())
