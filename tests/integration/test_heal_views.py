"""Healing compiled views for real: PHP-FPM with OPcache, Debian's Blade compiler, Laravel's renderer.

The origin incident as a test: views go stale after a deploy, the heal recompiles them while requests
render those very views through FPM, and not one request fails or shows an empty or partial view.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.config import Config, parse
from exporter.heal.routes import HEAL_RUNNER
from tests.support import phpfpm
from tests.support.healing import AUTH, alert, compiled_dir, make_app_dir, payload, token_file, views_dir
from tests.support.phpfpm import Fpm, FpmFactory
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

RENDER_SCRIPT = Path(__file__).parents[1] / "support" / "laravel_render.php"
VIEWS = 60
# Blade needs these; the test pool's private conf.d loads nothing by itself.
LARAVEL_EXTENSIONS = {"20-laravel.ini": "extension=tokenizer.so\nextension=ctype.so\nextension=mbstring.so\n"}
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


def blade(i: int, version: int) -> str:
    return f"<p>view {i} VERSION-{version} @for($k = 0; $k < $n; $k++){{{{ $k }}}}@endfor END</p>\n"


def expected(i: int, version: int) -> str:
    return f"<p>view {i} VERSION-{version} 012 END</p>\n"


def setup_app(tmp_path: Path, fpm: Fpm) -> tuple[Path, Config]:
    if not Path("/usr/share/php/Illuminate/View/Compilers/BladeCompiler.php").exists():
        pytest.skip("Debian's php-laravel-framework is not installed")
    root = make_app_dir(tmp_path / "shop")
    shutil.copy(RENDER_SCRIPT, fpm.docroot / "render.php")
    config = parse({
        "laravel": [{"name": "shop", "root": str(root)}],
        "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                     "laravel": "shop"}],
        "heal": {"token_file": str(token_file(tmp_path))},
    })
    return root, config


async def render(fpm: Fpm, root: Path, i: int) -> tuple[int, str]:
    query = urlencode({"views": views_dir(root), "compiled": compiled_dir(root), "view": f"v{i}"})
    resp = await fpm.get("render.php", query, timeout=30)
    return resp.status, resp.body.decode(errors="replace")


async def test_stale_and_orphaned_views_are_healed_while_renders_never_fail(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    fpm = php_fpm(conf_d=LARAVEL_EXTENSIONS)
    root, config = setup_app(tmp_path, fpm)
    for i in range(VIEWS):
        (views_dir(root) / f"v{i}.blade.php").write_text(blade(i, 1))
    for i in range(VIEWS):  # Laravel compiles each on its first render, as in production
        assert await render(fpm, root, i) == (200, expected(i, 1))
    compiled_files = sorted(compiled_dir(root).iterdir())
    assert len(compiled_files) == VIEWS
    # A deploy: new sources, newer than their compiled files; one view removed (its compiled file orphaned).
    old, new = time.time() - 600, time.time() - 300
    for f in compiled_files:
        os.utime(f, (old, old))
    for i in range(VIEWS):
        src = views_dir(root) / f"v{i}.blade.php"
        src.write_text(blade(i, 2))
        os.utime(src, (new, new))
    (views_dir(root) / f"v{VIEWS - 1}.blade.php").unlink()
    client = await aiohttp_client(create_app(config, run_collectors=False))
    runner = client.server.app[HEAL_RUNNER]  # type: ignore[index]
    before = await runner.scheduler.collect("views", "shop")
    assert before.observation is not None
    assert len(before.observation.details["stale"]) == VIEWS - 1
    removed = [str(p) for p in compiled_files if f"v{VIEWS - 1}.blade" in p.read_text()]
    assert before.observation.details["orphaned"] == removed

    body = payload(alert("CachewardenViewsStale", fingerprint="stale"),
                   alert("CachewardenViewsOrphaned", fingerprint="orphan"))
    headers = {"Content-Type": "application/json", **AUTH}
    resp = await client.post("/heal", data=json.dumps(body), headers=headers)
    assert resp.status == 200
    decisions = (await resp.json())["decisions"]
    assert [d["decision"] for d in decisions] == ["started", "started"]
    # 50 concurrent renders of distinct views while the heal recompiles them.
    results = await asyncio.gather(*(render(fpm, root, i) for i in range(50)))
    await runner.wait_idle()

    for i, (status, text) in enumerate(results):
        assert status == 200, text
        assert text in (expected(i, 1), expected(i, 2)), text
    runs = {r["plan"]: r for r in [runner.run(d["run_id"]).as_dict() for d in decisions]}
    assert runs["CachewardenViewsStale"]["result"] in ("verified", "already_healthy")
    assert runs["CachewardenViewsOrphaned"]["result"] == "verified"
    after = await runner.scheduler.collect("views", "shop")
    assert after.observation is not None
    assert after.observation.details["stale"] == []
    assert after.observation.details["orphaned"] == []
    assert not any(p.name.count(".cwtmp-") for p in compiled_dir(root).iterdir())

    async def all_new() -> bool:
        return all([await render(fpm, root, i) == (200, expected(i, 2)) for i in range(VIEWS - 1)])

    await async_wait_for(all_new, timeout=15, message="every view renders its new version")


async def test_atomic_compile_writes_exactly_what_laravels_compile_writes(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    fpm = php_fpm(conf_d=LARAVEL_EXTENSIONS)
    root, config = setup_app(tmp_path, fpm)
    src = views_dir(root) / "page.blade.php"
    src.write_text("@extends('x')\n@section('a') {{ $a }} @endsection\n<?php echo 1; ?>\n"
                   "@php $b = 2; @endphp")
    os.utime(src, (time.time() - 60,) * 2)
    status, _ = await render(fpm, root, 0)  # nothing named v0: only to warm up the pool
    assert status == 500
    client = await aiohttp_client(create_app(config, run_collectors=False))

    resp = await client.post("/heal?action=views.recompile&target=shop", headers=AUTH)

    run: dict[str, Any] = (await resp.json())["run"]
    assert run["result"] == "verified", run
    [ours] = list(compiled_dir(root).iterdir())
    reference = tmp_path / "reference"
    reference.mkdir()
    script = (
        "require '/usr/share/php/Illuminate/View/autoload.php';"
        "require '/usr/share/php/Illuminate/Filesystem/autoload.php';"
        "(new Illuminate\\View\\Compilers\\BladeCompiler("
        f"new Illuminate\\Filesystem\\Filesystem, '{reference}'))"
        f"->compile('{src}');"
    )
    proc = await asyncio.create_subprocess_exec("php", "-r", script)
    assert await proc.wait() == 0
    [theirs] = list(reference.iterdir())
    assert ours.name == theirs.name
    assert ours.read_bytes() == theirs.read_bytes()
