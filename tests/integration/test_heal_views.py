"""Healing compiled views for real: PHP-FPM with OPcache, Debian's Blade compiler, Laravel's renderer.

The origin incident as a test: views go stale after a deploy, the heal recompiles them while requests
keep rendering those very views through FPM, and not one request fails or shows an empty or partial
view. The same harness run against a deliberately non-atomic writer must see failures, which is what
shows it can see the race at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.config import Config, parse
from exporter.heal.actions.views_recompile import CLI_OPCACHE_NOTE
from exporter.heal.routes import HEAL_RUNNER
from tests.support import phpfpm
from tests.support.healing import (
    AUTH,
    LARAVEL_EXTENSIONS,
    alert,
    compiled_dir,
    make_app_dir,
    payload,
    require_blade,
    require_php_cli,
    token_file,
    views_dir,
)
from tests.support.phpfpm import Fpm, FpmFactory

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

RENDER_SCRIPT = Path(__file__).parents[1] / "support" / "laravel_render.php"
VIEWS = 200
# Concurrent render loops during a race; the pool gets two more workers, for the heal's own request.
RENDER_LOOPS = 14
RACE_POOL = {"pm.max_children": RENDER_LOOPS + 2}
# Every include re-checks the file, as with the default revalidate_freq but without a 2 s blind spot.
RACE_OPCACHE = {"opcache.revalidate_freq": 0}
# Rewrites compiled views the way a careless tool would: the file is missing, then empty, then full.
NON_ATOMIC_WRITER = """<?php
require '/usr/share/php/Illuminate/View/autoload.php';
require '/usr/share/php/Illuminate/Filesystem/autoload.php';
use Illuminate\\Filesystem\\Filesystem;
use Illuminate\\View\\Compilers\\BladeCompiler;
$compiler = new BladeCompiler(new Filesystem(), $argv[1]);
foreach (array_slice($argv, 3) as $source) {
    $target = $compiler->getCompiledPath($source);
    $contents = $compiler->compileString(file_get_contents($source));
    unlink($target);
    file_put_contents($target, '');
    usleep((int) $argv[2]);
    file_put_contents($target, $contents);
}
"""
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


def blade(i: int, version: int) -> str:
    return f"<p>view {i} VERSION-{version} @for($k = 0; $k < $n; $k++){{{{ $k }}}}@endfor END</p>\n"


def expected(i: int, version: int) -> str:
    return f"<p>view {i} VERSION-{version} 012 END</p>\n"


def setup_app(tmp_path: Path, fpm: Fpm) -> tuple[Path, Config]:
    require_blade()
    root = make_app_dir(tmp_path / "shop")
    shutil.copy(RENDER_SCRIPT, fpm.docroot / "render.php")
    config = parse({
        "laravel": [{"name": "shop", "root": str(root)}],
        "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                     "laravel": "shop"}],
        "heal": {"token_file": str(token_file(tmp_path))},
    })
    return root, config


async def render(fpm: Fpm, root: Path, *indexes: int, trust: bool = False) -> tuple[int, str]:
    query = {"views": views_dir(root), "compiled": compiled_dir(root),
             "view": ",".join(f"v{i}" for i in indexes)}
    if trust:
        query["trust"] = "1"
    resp = await fpm.get("render.php", urlencode(query), timeout=30)
    return resp.status, resp.body.decode(errors="replace")


def write_views(root: Path, count: int, version: int, mtime: float | None = None) -> None:
    for i in range(count):
        src = views_dir(root) / f"v{i}.blade.php"
        src.write_text(blade(i, version))
        if mtime is not None:
            os.utime(src, (mtime, mtime))


def laravel_sources(root: Path, count: int) -> list[str]:
    """Source paths as Laravel's finder spells them (under the resolved views directory)."""
    real = os.path.realpath(views_dir(root))
    return [f"{real}/v{i}.blade.php" for i in range(count)]


async def compiled_by_renders(fpm: Fpm, root: Path, count: int) -> list[Path]:
    """Version 1 of every view, compiled by Laravel on first render as in production."""
    write_views(root, count, 1)
    assert await render(fpm, root, *range(count)) == (200, "".join(expected(i, 1) for i in range(count)))
    files = sorted(compiled_dir(root).iterdir())
    assert len(files) == count
    return files


def deploy(root: Path, compiled_files: list[Path], count: int) -> None:
    """Version 2 of every source, newer than its compiled file: every view is stale."""
    old, new = time.time() - 600, time.time() - 300
    for f in compiled_files:
        os.utime(f, (old, old))
    write_views(root, count, 2, mtime=new)


@dataclass
class Race:
    """What concurrent renders saw while a writer rewrote the compiled views."""

    renders: int = 0
    during_write: int = 0  # renders that started before the writer had finished
    bad: list[str] = field(default_factory=list)


def _is_good(i: int, line: str) -> bool:
    return line + "\n" in (expected(i, 1), expected(i, 2))


async def race(fpm: Fpm, root: Path, count: int, writing: Callable[[], bool]) -> Race:
    """RENDER_LOOPS loops each rendering every view in one request, until `writing()` turns false.

    The renders trust the compiled files (no recompile of their own), so every one of them includes
    the very files the writer is replacing. Each loop starts at another view, so that at any moment
    some request is reading the file being written.
    """
    seen = Race()

    async def loop(offset: int) -> None:
        order = [(offset + k) % count for k in range(count)]
        while True:
            started_while_writing = writing()
            status, text = await render(fpm, root, *order, trust=True)
            seen.renders += 1
            seen.during_write += started_while_writing
            lines = text.splitlines()
            if status != 200 or len(lines) != count:
                seen.bad.append(f"HTTP {status}: {text[:200]}")
            else:
                seen.bad.extend(line for i, line in zip(order, lines, strict=True) if not _is_good(i, line))
            if not started_while_writing:
                return

    await asyncio.gather(*(loop(k * count // RENDER_LOOPS) for k in range(RENDER_LOOPS)))
    return seen


async def test_stale_and_orphaned_views_are_healed_while_renders_never_fail(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    fpm = php_fpm(conf_d=LARAVEL_EXTENSIONS, pool=RACE_POOL, opcache=RACE_OPCACHE)
    root, config = setup_app(tmp_path, fpm)
    compiled_files = await compiled_by_renders(fpm, root, VIEWS)
    deploy(root, compiled_files, VIEWS)
    orphan = VIEWS - 1
    (views_dir(root) / f"v{orphan}.blade.php").unlink()
    client = await aiohttp_client(create_app(config, run_collectors=False))
    runner = client.server.app[HEAL_RUNNER]  # type: ignore[index]
    before = await runner.scheduler.collect("views", "shop")
    assert before.observation is not None
    assert len(before.observation.details["stale"]) == VIEWS - 1
    removed = [str(p) for p in compiled_files if f"v{orphan}.blade" in p.read_text()]
    assert before.observation.details["orphaned"] == removed

    body = payload(alert("CachewardenViewsStale", fingerprint="stale"),
                   alert("CachewardenViewsOrphaned", fingerprint="orphan"))
    headers = {"Content-Type": "application/json", **AUTH}
    resp = await client.post("/heal", data=json.dumps(body), headers=headers)
    assert resp.status == 200
    decisions = (await resp.json())["decisions"]
    assert [d["decision"] for d in decisions] == ["started", "started"]
    runs = [runner.run(d["run_id"]) for d in decisions]
    seen = await race(fpm, root, VIEWS - 1, lambda: any(r.state != "finished" for r in runs))
    await runner.wait_idle()

    assert seen.bad == []
    assert seen.during_write >= RENDER_LOOPS
    by_plan = {r.plan: r.as_dict() for r in runs}
    stale_run = by_plan["CachewardenViewsStale"]
    assert stale_run["result"] == "verified", stale_run
    assert stale_run["step_results"][0]["done_total"] == VIEWS - 1
    assert by_plan["CachewardenViewsOrphaned"]["result"] == "verified"
    after = await runner.scheduler.collect("views", "shop")
    assert after.observation is not None
    assert after.observation.details["stale"] == []
    assert after.observation.details["orphaned"] == []
    assert not any(p.name.count(".cwtmp-") for p in compiled_dir(root).iterdir())
    new = "".join(expected(i, 2) for i in range(VIEWS - 1))
    assert await render(fpm, root, *range(VIEWS - 1)) == (200, new)


async def test_the_race_harness_sees_a_non_atomic_writer_fail_renders(
        php_fpm: FpmFactory, tmp_path: Path) -> None:
    php = require_php_cli()
    fpm = php_fpm(conf_d=LARAVEL_EXTENSIONS, pool=RACE_POOL, opcache=RACE_OPCACHE)
    root, _ = setup_app(tmp_path, fpm)
    deploy(root, await compiled_by_renders(fpm, root, VIEWS), VIEWS)
    writer = tmp_path / "non_atomic_writer.php"
    writer.write_text(NON_ATOMIC_WRITER)
    sources = laravel_sources(root, VIEWS)
    proc = await asyncio.create_subprocess_exec(
        php, str(writer), str(compiled_dir(root)), "2000", *sources,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        seen = await race(fpm, root, VIEWS, lambda: proc.returncode is None)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    assert proc.returncode == 0
    assert seen.during_write >= RENDER_LOOPS
    assert seen.bad, f"{seen.renders} renders during a non-atomic rewrite saw nothing wrong"


async def test_fpm_serves_the_recompiled_view_even_without_timestamp_validation(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    # file_update_protection 0: the compiled file the first render writes is cached at once.
    fpm = php_fpm(conf_d=LARAVEL_EXTENSIONS,
                  opcache={"opcache.validate_timestamps": 0, "opcache.file_update_protection": 0})
    root, config = setup_app(tmp_path, fpm)
    deploy(root, await compiled_by_renders(fpm, root, 1), 1)
    client = await aiohttp_client(create_app(config, run_collectors=False))

    resp = await client.post("/heal?action=views.recompile&target=shop", headers=AUTH)

    run: dict[str, Any] = (await resp.json())["run"]
    assert run["result"] == "verified", run
    assert run["step_results"][0]["notes"] == []
    renders = [await render(fpm, root, 0) for _ in range(8)]
    assert renders == [(200, expected(0, 2))] * 8


async def test_a_cli_compile_notes_that_fpm_may_serve_the_old_views(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    php = require_php_cli()
    require_blade()
    root = make_app_dir(tmp_path / "shop")

    run = await recompile_with_php_cli(root, php, tmp_path, aiohttp_client)

    assert run["result"] == "verified", run
    assert run["step_results"][0]["notes"] == [CLI_OPCACHE_NOTE]


async def recompile_with_php_cli(root: Path, php: str, tmp_path: Path,
                                 aiohttp_client: MakeClient) -> dict[str, Any]:
    """Make one view of `root` stale and run views.recompile on it through `heal.php_cli`."""
    write_views(root, 1, 1, mtime=time.time() - 60)
    config = parse({"laravel": [{"name": "shop", "root": str(root)}],
                    "heal": {"token_file": str(token_file(tmp_path)), "php_cli": php}})
    client = await aiohttp_client(create_app(config, run_collectors=False))
    resp = await client.post("/heal?action=views.recompile&target=shop", headers=AUTH)
    run: dict[str, Any] = (await resp.json())["run"]
    return run


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


DEBIAN_AUTOLOAD = ("<?php require '/usr/share/php/Illuminate/View/autoload.php';"
                   " require '/usr/share/php/Illuminate/Filesystem/autoload.php';\n")


@pytest.mark.parametrize(("bootstrap", "refusal"), [
    (None, "no bootstrap/app.php"),
    ("<?php throw new RuntimeException('DB_PASSWORD=hunter2');\n", "cannot boot the app (RuntimeException"),
])
async def test_an_app_with_its_own_vendor_dir_is_never_compiled_without_its_directives(
        tmp_path: Path, aiohttp_client: MakeClient, bootstrap: str | None, refusal: str) -> None:
    php = require_php_cli()
    require_blade()
    root = make_app_dir(tmp_path / "shop")
    (root / "vendor").mkdir()
    (root / "vendor" / "autoload.php").write_text(DEBIAN_AUTOLOAD)
    if bootstrap is not None:
        (root / "bootstrap").mkdir()
        (root / "bootstrap" / "app.php").write_text(bootstrap)

    run = await recompile_with_php_cli(root, php, tmp_path, aiohttp_client)

    assert run["result"] == "failed", run
    [step] = run["step_results"]
    assert refusal in step["error"]
    assert "hunter2" not in json.dumps(run)
    assert list(compiled_dir(root).iterdir()) == []
