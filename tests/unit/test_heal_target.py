"""`POST /heal?target=T`: the plans for whatever is wrong with T now, run one after another, each verified."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.config import Config
from tests.support.healing import (
    AUTH,
    an_hour_ago,
    heal_config,
    make_app_dir,
    token_file,
    write_compiled,
    write_view,
)

Client = TestClient[web.Request, web.Application]


def orphan(root: Path) -> Path:
    return write_compiled(root, str(root / "resources/views/gone.blade.php"), mtime=an_hour_ago())


async def serve(aiohttp_client: Callable[..., Awaitable[Client]], config: Config) -> Client:
    return await aiohttp_client(create_app(config, run_collectors=False))


async def test_every_plan_the_target_needs_runs_and_a_verified_heal_answers_200(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    root = make_app_dir(tmp_path / "shop")
    compiled = [orphan(root), write_compiled(root, str(root / "resources/views/deleted.blade.php"),
                                             mtime=an_hour_ago())]
    client = await serve(aiohttp_client, heal_config(root, token_file(tmp_path)))

    resp = await client.post("/heal?target=shop", headers=AUTH)

    body = await resp.json()
    assert resp.status == 200, body
    assert (body["result"], body["target"]) == ("verified", "shop")
    assert [(r["plan"], r["result"]) for r in body["runs"]] == [("CachewardenViewsOrphaned", "verified")]
    assert not any(p.exists() for p in compiled)
    again = await client.post("/heal?target=shop", headers=AUTH)
    assert again.status == 200
    assert (await again.json())["result"] == "already_healthy"


async def test_a_plan_that_fails_makes_the_answer_422_and_the_others_still_run(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    root = make_app_dir(tmp_path / "shop")
    gone = orphan(root)
    write_view(root, "new", "hi")  # uncompiled, and no PHP to compile it with
    client = await serve(aiohttp_client, heal_config(root, token_file(tmp_path)))

    resp = await client.post("/heal?target=shop", headers=AUTH)

    body = await resp.json()
    assert resp.status == 422
    assert body["result"] == "failed"
    assert [(r["plan"], r["result"]) for r in body["runs"]] == [
        ("CachewardenViewsOrphaned", "verified"), ("CachewardenViewsUncompiled", "failed")]
    assert not gone.exists()


async def test_a_dry_run_lists_every_plan_and_changes_nothing(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    root = make_app_dir(tmp_path / "shop")
    gone = orphan(root)
    client = await serve(aiohttp_client, heal_config(root, token_file(tmp_path)))

    resp = await client.post("/heal?target=shop&dry_run=1", headers=AUTH)

    body = await resp.json()
    assert (resp.status, body["result"]) == (200, "dry_run")
    assert body["runs"][0]["step_results"][0]["done"] == [f"would delete {gone}"]
    assert gone.exists()


async def test_an_unknown_target_is_400_and_a_disabled_heal_403(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    root = make_app_dir(tmp_path / "shop")
    client = await serve(aiohttp_client, heal_config(root, token_file(tmp_path)))
    assert (await client.post("/heal?target=nope", headers=AUTH)).status == 400
    (tmp_path / "off").mkdir()
    off = await serve(aiohttp_client, heal_config(root, token_file(tmp_path / "off"), enabled=False))
    assert (await off.post("/heal?target=shop", headers=AUTH)).status == 403
