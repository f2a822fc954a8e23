"""Collectors hand the heal typed findings; actions read those, never the free-form details."""

from __future__ import annotations

from pathlib import Path

from exporter.collectors.base import Observation
from exporter.collectors.opcache import OPCACHE_SCRIPTS_STALE
from exporter.collectors.views import ViewsCollector
from exporter.config import LaravelTarget, parse
from exporter.findings import (
    EntryProblem,
    FileCacheFindings,
    OpcacheFindings,
    ScriptProblem,
    StaleView,
    ViewFindings,
)
from exporter.heal.actions.base import ActionContext
from exporter.heal.actions.opcache import Reset
from exporter.heal.actions.safety import CompiledRoots
from exporter.heal.phpexec import PhpExecutor
from exporter.metrics import Samples
from tests.support.blade import T0, AppTree


def test_the_views_collector_hands_the_heal_typed_view_findings(tmp_path: Path) -> None:
    app = AppTree(tmp_path / "shop")
    compiled = app.compile(app.source("old.blade.php", T0 + 50), T0 + 10)
    app.compile(app.views / "gone.blade.php")
    app.source("new.blade.php")
    target = LaravelTarget(name="shop", root=app.views.parent.parent, views_path=app.views,
                           compiled_path=app.compiled)
    collector = ViewsCollector(target, interval=60.0, timeout=5.0)

    found = collector.observe(collector.scanner.scan(), now=T0).findings

    assert found == ViewFindings(
        stale=(StaleView(str(compiled), str(app.views / "old.blade.php")),),
        orphaned=(str(app.compiled_path(app.views / "gone.blade.php")),),
        uncompiled=(str(app.views / "new.blade.php"),))


def test_scripts_to_invalidate_come_from_shared_memory_and_the_file_cache_once_each() -> None:
    fc = FileCacheFindings("/var/cache/opcache", "abc", None, {
        EntryProblem.STALE: ("/app/a.php",), EntryProblem.ORPHANED: ("/app/gone.php",),
        EntryProblem.OUTSIDE_RELEASE: ("/app/old/c.php",)})
    found = OpcacheFindings({ScriptProblem.STALE: ("/app/a.php", "/app/b.php"),
                             ScriptProblem.MISSING: ("/app/m.php",)}, fc)
    # An orphaned entry has no source to invalidate: the purge removes it.
    assert found.to_invalidate() == ["/app/a.php", "/app/b.php", "/app/m.php", "/app/old/c.php"]
    assert fc.by_reason["suspect"] == ()


def test_a_reset_does_not_claim_what_stale_file_cache_entries_would_load_again(tmp_path: Path) -> None:
    config = parse({})
    reset = Reset(ActionContext(config, PhpExecutor(config), CompiledRoots([])))

    def observed(served_stale: bool) -> Observation:
        fc = FileCacheFindings("/var/cache/opcache", "abc", None, {EntryProblem.STALE: ("/app/a.php",)},
                               served_stale=served_stale)
        return Observation(Samples("www"), findings=OpcacheFindings(file_cache=fc))

    assert OPCACHE_SCRIPTS_STALE.name in reset.can_clear("www", observed(served_stale=False))
    assert OPCACHE_SCRIPTS_STALE.name not in reset.can_clear("www", observed(served_stale=True))
