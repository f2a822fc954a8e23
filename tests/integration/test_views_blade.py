"""The views collector on views compiled by Laravel's real Blade compiler, against ground truth
computed here independently (whole files read, every footer parsed with a regex, every mtime stat'ed)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import SCHEDULER, create_app
from exporter.collectors.base import Verdict
from exporter.collectors.views import ViewsCollector
from exporter.config import LaravelTarget, parse
from exporter.fs.compiled_views import CompiledViewScanner
from tests.support.blade import compile_views, render_view, requires_blade, set_mtime

pytestmark = [pytest.mark.integration, requires_blade]

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
FOOTER = re.compile(r"/\*\*PATH (/.+) ENDPATH\*\*/ \?>\s*\Z", re.DOTALL)
VIEWS = {
    "layouts/app.blade.php": "<html><body>@yield('content')</body></html>",
    "components/alert.blade.php": "<div class=\"alert\">{{ $message }}</div>",
    "home.blade.php": "@extends('layouts.app')\n@section('content') <h1>{{ $title }}</h1> @endsection",
    "shop/cart.blade.php": "@extends('layouts.app')\n@section('content') @include('components.alert') "
                           "@foreach($items as $item) {{ $item->name }} @endforeach @endsection",
    "shop/product.blade.php": "@extends('layouts.app')\n@section('content') {{ $product->name }} @endsection",
    "emails/welcome.blade.php": "Hello {{ $user->name }}",
}


@dataclass(frozen=True)
class Truth:
    sources: int
    compiled: int
    stale: int
    orphaned: int
    uncompiled: int


def ground_truth(views: Path, compiled: Path) -> Truth:
    sources = {str(p.resolve()) for p in views.rglob("*.blade.php")}
    named: set[str] = set()
    stale = orphaned = count = 0
    for path in compiled.glob("*.php"):
        count += 1
        match = FOOTER.search(path.read_text())
        assert match, f"{path} has no footer"
        source = match.group(1)
        named.add(source)
        if not os.path.exists(source):
            orphaned += 1
        elif int(os.stat(source).st_mtime) >= int(path.stat().st_mtime):
            stale += 1
    return Truth(len(sources), count, stale, orphaned, len(sources - named))


def measured(scanner: CompiledViewScanner) -> Truth:
    scan = scanner.scan()
    return Truth(scan.sources, scan.compiled, len(scan.stale), len(scan.orphaned), len(scan.uncompiled))


@pytest.fixture
def app_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A Laravel app whose views were all compiled a minute after their last edit."""
    views, compiled = tmp_path / "resources" / "views", tmp_path / "storage" / "framework" / "views"
    compiled.mkdir(parents=True)
    for rel, text in VIEWS.items():
        (views / rel).parent.mkdir(parents=True, exist_ok=True)
        (views / rel).write_text(text + "\n")
    outputs = compile_views(compiled, sorted(views.rglob("*.blade.php")))
    assert len(outputs) == len(VIEWS)
    now = time.time()
    for path in views.rglob("*.blade.php"):
        set_mtime(path, now - 120)
    for path in outputs:
        set_mtime(path, now - 60)
    return views, compiled


def test_counts_follow_edits_deletions_and_additions_like_ground_truth(app_tree: tuple[Path, Path]) -> None:
    views, compiled = app_tree
    scanner = CompiledViewScanner(views, compiled)
    assert measured(scanner) == ground_truth(views, compiled) == Truth(6, 6, 0, 0, 0)

    (views / "home.blade.php").write_text("@extends('layouts.app') edited\n")
    (views / "shop/cart.blade.php").touch()
    assert measured(scanner) == ground_truth(views, compiled) == Truth(6, 6, 2, 0, 0)

    (views / "emails/welcome.blade.php").unlink()
    assert measured(scanner) == ground_truth(views, compiled) == Truth(5, 6, 2, 1, 0)

    (views / "shop/checkout.blade.php").write_text("{{ $total }}\n")
    (views / "admin").mkdir()
    (views / "admin/dashboard.blade.php").write_text("{{ $stats }}\n")
    assert measured(scanner) == ground_truth(views, compiled) == Truth(7, 6, 2, 1, 2)

    compile_views(compiled, [views / "home.blade.php", views / "admin/dashboard.blade.php"])
    # Recompiled in the same second as the edit: Laravel still calls home stale (>=), and so do both.
    truth = ground_truth(views, compiled)
    assert measured(scanner) == truth
    assert (truth.compiled, truth.uncompiled) == (7, 1)


def test_views_compiled_through_a_symlinked_release_are_matched_by_realpath(tmp_path: Path) -> None:
    release = tmp_path / "releases" / "20260101"
    views = release / "resources" / "views"
    views.mkdir(parents=True)
    (views / "home.blade.php").write_text("{{ $title }}\n")
    (tmp_path / "current").symlink_to(release)
    compiled = tmp_path / "compiled"
    compiled.mkdir()
    # The compile script resolves the path, as Laravel's default config/view.php does.
    [output] = compile_views(compiled, [tmp_path / "current" / "resources" / "views" / "home.blade.php"])
    assert f"/**PATH {views / 'home.blade.php'} ENDPATH**/" in output.read_text()
    set_mtime(views / "home.blade.php", time.time() - 120)

    scan = CompiledViewScanner(tmp_path / "current" / "resources" / "views", compiled).scan()

    assert (scan.sources, scan.compiled, scan.external, len(scan.uncompiled)) == (1, 1, 0, 0)


async def test_an_inline_component_rendered_by_laravel_leaves_a_healthy_report(tmp_path: Path) -> None:
    views, compiled = tmp_path / "resources" / "views", tmp_path / "storage" / "framework" / "views"
    views.mkdir(parents=True)
    compiled.mkdir(parents=True)
    (views / "page.blade.php").write_text('<x-alert type="warn">Careful</x-alert>\n')
    set_mtime(views / "page.blade.php", time.time() - 120)

    html = render_view(views, compiled, "page")

    assert '<div class="alert alert-warn">Careful</div>' in html
    [template] = compiled.glob("*.blade.php")  # the component's raw template, written by Laravel
    assert "/**PATH" not in template.read_text()
    set_mtime(template, time.time() - 120)  # a minute before its compile, as in the fixture above
    for path in compiled.glob("*.php"):
        if not path.name.endswith(".blade.php"):
            set_mtime(path, time.time() - 60)
    target = LaravelTarget(name="shop", root=tmp_path, views_path=views, compiled_path=compiled)
    collector = ViewsCollector(target, interval=60.0, timeout=30.0)
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    scan = collector.scanner.scan()
    assert (scan.sources, scan.compiled, scan.external) == (1, 2, 1)  # the page, and the compiled template
    assert (scan.footerless, scan.orphaned, scan.stale, scan.uncompiled) == ([], [], [], [])
    assert [c.name for c in obs.checks if c.verdict is not Verdict.OK] == []


async def test_metrics_endpoint_shows_the_view_counts(
        app_tree: tuple[Path, Path], aiohttp_client: MakeClient) -> None:
    views, compiled = app_tree
    (views / "home.blade.php").touch()
    (views / "emails/welcome.blade.php").unlink()
    (views / "new.blade.php").write_text("{{ 1 }}\n")
    config = parse({"laravel": [{"name": "shop", "root": str(views.parent.parent)}]})
    client = await aiohttp_client(create_app(config, run_collectors=False))
    statuses = await client.server.app[SCHEDULER].collect_all()  # type: ignore[union-attr]
    assert [s.up for s in statuses if s.kind == "views"] == [True]

    resp = await client.get("/metrics")

    assert resp.status == 200
    got = {(s.name, s.labels.get("target")): s.value
           for fam in text_string_to_metric_families(await resp.text()) for s in fam.samples}
    truth = ground_truth(views, compiled)
    assert truth == Truth(6, 6, 1, 1, 1)
    assert got[("cachewarden_views_sources", "shop")] == truth.sources
    assert got[("cachewarden_views_compiled", "shop")] == truth.compiled
    assert got[("cachewarden_views_stale", "shop")] == truth.stale
    assert got[("cachewarden_views_orphaned", "shop")] == truth.orphaned
    assert got[("cachewarden_views_uncompiled", "shop")] == truth.uncompiled
    assert got[("cachewarden_views_dir_exists", "shop")] == 1
    assert got[("cachewarden_views_dir_writable", "shop")] == 1
    assert got[("cachewarden_views_oldest_stale_age_seconds", "shop")] < 60
    assert got[("cachewarden_views_footer_reads_total", "shop")] == 6
