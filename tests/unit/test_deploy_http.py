"""`/deploy` over HTTP with the real views collector on a temporary app: the heal's guards, the answer
codes, what is never taken over HTTP, and the deploy's metrics and status page entry."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.config import Config
from tests.support.healing import AUTH, heal_config, make_app_dir, token_file, write_compiled, write_view
from tests.unit.test_heal_http import metric

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    root = make_app_dir(tmp_path / "shop")
    source = write_view(root, "home", "<p>home</p>", mtime=time.time() - 3600)
    write_compiled(root, str(source), mtime=time.time() - 60)
    return root


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path, app_root: Path) -> Client:
    config: Config = heal_config(app_root, token_file(tmp_path))
    return await aiohttp_client(create_app(config, run_collectors=False))


async def test_deploy_refuses_without_the_heal_token(client: Client) -> None:
    resp = await client.post("/deploy?target=shop&phases=verify")
    assert resp.status == 401
    resp = await client.post("/deploy?target=shop&phases=verify", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    assert (await client.get("/deploy")).status == 401


async def test_a_verified_deploy_answers_200_and_is_counted_listed_and_shown(client: Client) -> None:
    resp = await client.post("/deploy?target=shop&phases=verify&timeout=5", headers=AUTH)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["run"]["result"] == "verified"
    assert [p["phase"] for p in body["run"]["phase_results"]] == ["verify"]

    text = await (await client.get("/metrics")).text()
    assert metric(text, "cachewarden_deploy_runs_total", target="shop", result="verified") == 1
    assert metric(text, "cachewarden_deploy_runs_total", target="shop", result="failed") == 0
    assert (metric(text, "cachewarden_deploy_phase_seconds", target="shop", phase="verify") or 0) > 0
    assert metric(text, "cachewarden_deploy_phase_seconds", target="shop", phase="prepare") == 0
    listed = await (await client.get("/deploy", headers=AUTH)).json()
    assert [r["id"] for r in listed["runs"]] == [body["run"]["id"]]
    page = await (await client.get("/")).text()
    assert "Last deploys" in page
    assert "verified" in page


async def test_a_stale_view_leaves_the_deploy_unverified_with_409_naming_it(
        client: Client, app_root: Path) -> None:
    source = app_root / "resources" / "views" / "home.blade.php"
    os.utime(source, (time.time(), time.time()))  # newer than its compiled file
    resp = await client.post("/deploy?target=shop&phases=verify&timeout=0.5", headers=AUTH)
    body = await resp.json()
    assert resp.status == 409, body
    assert body["run"]["result"] == "unverified"
    assert body["run"]["phase_results"][0]["unmet"] == [
        "cachewarden_views_stale: 1 compiled view(s) older than their source on shop"]
    page = await (await client.get("/")).text()
    assert "cachewarden_views_stale: 1 compiled view(s) older than their source on shop" in page


@pytest.mark.parametrize(("query", "says"), [
    ("target=nope", "no laravel target named 'nope'"),
    ("target=shop&phases=prepare,launch", "unknown phase(s) ['launch']"),
    ("target=shop&phases=switch,verify", "the switch is the pipeline's own over HTTP"),
    ("target=shop&release=/etc", "release /etc: neither"),
    ("target=shop&release=relative/path", "not an absolute path"),
    ("target=shop&timeout=1e9", "timeout must be"),
    ("target=shop&timeout=nan", "timeout must be"),
    ("target=shop&dryrun=1", "unknown parameter(s) ['dryrun']"),
    ("target=shop&switch_command=rm", "unknown parameter(s) ['switch_command']"),
])
async def test_a_request_naming_no_known_app_phase_or_release_is_refused_with_400(
        client: Client, query: str, says: str) -> None:
    resp = await client.post(f"/deploy?{query}", headers=AUTH)
    body = await resp.json()
    assert resp.status == 400, body
    assert says in body["error"]


async def test_a_disabled_heal_disables_deploys_too(aiohttp_client: MakeClient, tmp_path: Path,
                                                    app_root: Path) -> None:
    config = heal_config(app_root, token_file(tmp_path), enabled=False)
    client = await aiohttp_client(create_app(config, run_collectors=False))
    resp = await client.post("/deploy?target=shop&phases=verify", headers=AUTH)
    assert resp.status == 403
