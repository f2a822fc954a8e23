"""The views collector: metrics, checks and details from a scan, and a timed-out scan being stopped."""

from __future__ import annotations

import threading
from pathlib import Path

from exporter.collectors.base import Verdict
from exporter.collectors.views import (
    VIEWS_COMPILED,
    VIEWS_DIR_EXISTS,
    VIEWS_DIR_FREE_BYTES,
    VIEWS_DIR_WRITABLE,
    VIEWS_FOOTER_READS,
    VIEWS_FOOTERLESS,
    VIEWS_OLDEST_STALE_AGE,
    VIEWS_ORPHANED,
    VIEWS_SOURCES,
    VIEWS_STALE,
    VIEWS_UNCOMPILED,
    ViewsCollector,
)
from exporter.config import LaravelTarget
from exporter.fs.compiled_views import CompiledViewScanner, ViewScan
from exporter.scheduler import Scheduler
from tests.support.blade import T0, AppTree


def _collector(app: AppTree, **kwargs: object) -> ViewsCollector:
    target = LaravelTarget(name="shop", root=app.views.parent.parent, views_path=app.views,
                           compiled_path=app.compiled)
    return ViewsCollector(target, interval=60.0, timeout=5.0, **kwargs)  # type: ignore[arg-type]


def _tree(tmp_path: Path) -> AppTree:
    app = AppTree(tmp_path / "shop")
    app.compile(app.source("home.blade.php", T0), T0 + 10)
    app.compile(app.source("layouts/app.blade.php", T0 + 100), T0 + 10)
    app.compile(app.source("old.blade.php", T0 + 50), T0 + 10)
    app.compile(app.views / "gone.blade.php")
    app.compile(app.source("half.blade.php"), footer=False)
    app.source("new.blade.php")
    return app


async def test_one_collection_exposes_every_count_and_the_age_of_the_oldest_stale_view(
        tmp_path: Path) -> None:
    collector = _collector(_tree(tmp_path))

    samples = (await collector.collect()).samples
    obs = collector.observe(collector.scanner.scan(), now=T0 + 1000)

    assert samples.value(VIEWS_SOURCES) == 5
    assert samples.value(VIEWS_COMPILED) == 5
    assert samples.value(VIEWS_STALE) == 2
    assert samples.value(VIEWS_ORPHANED) == 1
    assert samples.value(VIEWS_UNCOMPILED) == 2  # new, and half (its compiled file has no footer)
    assert samples.value(VIEWS_FOOTERLESS) == 1
    assert samples.value(VIEWS_DIR_EXISTS) == 1
    assert samples.value(VIEWS_DIR_WRITABLE) == 1
    assert (samples.value(VIEWS_DIR_FREE_BYTES) or 0) > 0
    assert obs.samples.value(VIEWS_OLDEST_STALE_AGE) == 1000 - 50
    assert obs.samples.value(VIEWS_FOOTER_READS) == 5  # the second scan read nothing new


def test_checks_list_offending_paths_and_details_carry_what_a_heal_needs(tmp_path: Path) -> None:
    app = _tree(tmp_path)
    collector = _collector(app)

    obs = collector.observe(collector.scanner.scan(), now=T0)

    checks = {c.name: c for c in obs.checks}
    assert checks["compiled directory"].verdict is Verdict.OK
    assert checks["stale views"].verdict is Verdict.PROBLEM
    assert checks["stale views"].total_items == 2
    assert checks["orphaned views"].items == (str(app.compiled_path(app.views / "gone.blade.php")),)
    assert checks["unreadable views"].verdict is Verdict.OK
    assert {d["source"] for d in obs.details["stale"]} == {
        str(app.views / "layouts/app.blade.php"), str(app.views / "old.blade.php")}
    assert obs.details["orphaned"] == list(checks["orphaned views"].items)
    assert sorted(obs.details["uncompiled"]) == sorted(
        [str(app.views / "new.blade.php"), str(app.views / "half.blade.php")])


def test_a_missing_compiled_directory_is_a_problem_and_has_no_free_bytes_series(tmp_path: Path) -> None:
    app = AppTree(tmp_path / "shop")
    collector = _collector(app)
    (app.compiled / ".gitignore").unlink()
    app.compiled.rmdir()

    obs = collector.observe(collector.scanner.scan(), now=T0)

    assert obs.samples.value(VIEWS_DIR_EXISTS) == 0
    assert obs.samples.value(VIEWS_DIR_FREE_BYTES) is None
    assert {c.name for c in obs.checks if not c.ok} == {"compiled directory", "compiled directory writable"}


class BlockingScanner(CompiledViewScanner):
    """A scan that runs until it is told to stop, recording that it was."""

    def __init__(self, app: AppTree) -> None:
        super().__init__(app.views, app.compiled)
        self.started = threading.Event()
        self.stopped = threading.Event()

    def scan(self, cancelled: threading.Event | None = None) -> ViewScan:
        assert cancelled is not None
        self.started.set()
        if cancelled.wait(timeout=10):
            self.stopped.set()
        return super().scan()


async def test_a_timed_out_collection_stops_its_walk_and_the_collector_goes_down(tmp_path: Path) -> None:
    app = AppTree(tmp_path / "shop")
    scanner = BlockingScanner(app)
    collector = _collector(app, scanner=scanner)
    collector.timeout = 0.2
    scheduler = Scheduler([collector])

    status = await scheduler.collect("views", "shop")

    assert status.up is False
    assert status.error is not None
    assert "timed out" in status.error
    assert scanner.started.is_set()
    assert scanner.stopped.wait(timeout=10)
