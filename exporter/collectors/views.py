"""Laravel's compiled Blade views: stale, orphaned and uncompiled views, and the directory's health.

The walk runs in the collector's own worker thread (`exporter.fs.compiled_views`), so `/metrics` never
waits for it, and a walk hung on a dead filesystem holds that one thread, not the event loop's shared
pool (which also runs DNS lookups, heal work and other apps' walks): while it hangs, each collection
fails at once instead of queueing another walk behind it.
Sample exposition for one app:

    cachewarden_views_sources{target="shop"} 212.0
    cachewarden_views_compiled{target="shop"} 230.0
    cachewarden_views_stale{target="shop"} 2.0
    cachewarden_views_orphaned{target="shop"} 1.0
    cachewarden_views_uncompiled{target="shop"} 1.0
    cachewarden_views_oldest_stale_age_seconds{target="shop"} 3605.0
    cachewarden_views_dir_writable{target="shop"} 1.0
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, ClassVar

from exporter.collectors.base import Check, Collector, Observation, Verdict
from exporter.config import LaravelTarget
from exporter.findings import StaleView, ViewFindings
from exporter.fs.compiled_views import CompiledViewScanner, ViewScan
from exporter.metrics import MetricSpec, counter, gauge

VIEWS_SOURCES = gauge("cachewarden_views_sources", "Blade sources (*.blade.php) under the views directory.")
VIEWS_COMPILED = gauge("cachewarden_views_compiled", "Compiled view files (*.php) in the compiled directory.")
VIEWS_STALE = gauge(
    "cachewarden_views_stale",
    "Compiled views whose source mtime is >= their own (Laravel recompiles them on the next request).",
)
VIEWS_ORPHANED = gauge(
    "cachewarden_views_orphaned", "Compiled views whose footer names a source that is gone."
)
VIEWS_UNCOMPILED = gauge("cachewarden_views_uncompiled", "Sources that no compiled view was compiled from.")
VIEWS_EXTERNAL = gauge(
    "cachewarden_views_external",
    "Compiled views of an existing file outside the views directory (package views, an older release).",
)
VIEWS_FOOTERLESS = gauge(
    "cachewarden_views_footerless", "Compiled files without a readable PATH footer (half-written or foreign)."
)
VIEWS_UNREADABLE = gauge(
    "cachewarden_views_unreadable", "View files or directories cachewarden's own user cannot read."
)
VIEWS_FOREIGN_OWNED = gauge(
    "cachewarden_views_foreign_owned", "Compiled files owned by another user than the compiled directory."
)
VIEWS_OLDEST_STALE_AGE = gauge(
    "cachewarden_views_oldest_stale_age_seconds",
    "Seconds since the source of the longest-stale compiled view changed (0 when none is stale).",
)
VIEWS_DIR_EXISTS = gauge("cachewarden_views_dir_exists", "1 if the compiled view directory exists.")
VIEWS_DIR_WRITABLE = gauge(
    "cachewarden_views_dir_writable",
    "1 if the compiled directory is writable by laravel[].php_user when set, else by cachewarden's own user.",
)
VIEWS_DIR_FREE_BYTES = gauge(
    "cachewarden_views_dir_free_bytes",
    "Bytes available to unprivileged users on the compiled directory's filesystem (absent if it is missing).",
)
VIEWS_FOOTER_READS = counter(
    "cachewarden_views_footer_reads_total", "Compiled-view footers read; unchanged files are not re-read."
)


class ViewsCollector(Collector):
    kind: ClassVar[str] = "views"
    metrics: ClassVar[tuple[MetricSpec, ...]] = (
        VIEWS_SOURCES, VIEWS_COMPILED, VIEWS_STALE, VIEWS_ORPHANED, VIEWS_UNCOMPILED, VIEWS_EXTERNAL,
        VIEWS_FOOTERLESS, VIEWS_UNREADABLE, VIEWS_FOREIGN_OWNED, VIEWS_OLDEST_STALE_AGE, VIEWS_DIR_EXISTS,
        VIEWS_DIR_WRITABLE, VIEWS_DIR_FREE_BYTES, VIEWS_FOOTER_READS,
    )

    def __init__(self, target: LaravelTarget, *, interval: float, timeout: float,
                 scanner: CompiledViewScanner | None = None) -> None:
        super().__init__(target.name, interval=interval, timeout=timeout)
        php_user = target.php_user
        self.scanner = scanner or CompiledViewScanner(target.views_dir, target.compiled_dir,
                                                      php_user=php_user)
        self.writable_for = f"by {target.php_user}" if php_user else "for cachewarden's own user"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"views-{target.name}")
        self._walk: Future[ViewScan] | None = None

    async def collect(self) -> Observation:
        if self._walk is not None and not self._walk.done():
            # Stuck in a system call the cancel flag cannot interrupt (a hung NFS mount, say).
            raise RuntimeError("previous scan still running (hung filesystem?)")
        cancelled = threading.Event()
        self._walk = self._thread.submit(self.scanner.scan, cancelled)
        try:
            scan = await asyncio.wrap_future(self._walk)
        except asyncio.CancelledError:
            cancelled.set()  # a timed-out walk stops instead of running on in its thread
            raise
        return self.observe(scan, now=time.time())

    async def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def observe(self, scan: ViewScan, *, now: float) -> Observation:
        s = self.new_samples()
        s.add(VIEWS_SOURCES, scan.sources)
        s.add(VIEWS_COMPILED, scan.compiled)
        s.add(VIEWS_STALE, len(scan.stale))
        s.add(VIEWS_ORPHANED, len(scan.orphaned))
        s.add(VIEWS_UNCOMPILED, len(scan.uncompiled))
        s.add(VIEWS_EXTERNAL, scan.external)
        s.add(VIEWS_FOOTERLESS, len(scan.footerless))
        s.add(VIEWS_UNREADABLE, len(scan.unreadable))
        s.add(VIEWS_FOREIGN_OWNED, len(scan.foreign_owned))
        oldest = min((v.source_mtime for v in scan.stale), default=None)
        s.add(VIEWS_OLDEST_STALE_AGE, 0.0 if oldest is None else max(0.0, now - oldest))
        s.add(VIEWS_DIR_EXISTS, scan.dir_exists)
        s.add(VIEWS_DIR_WRITABLE, scan.dir_writable)
        if scan.free_bytes is not None:
            s.add(VIEWS_DIR_FREE_BYTES, scan.free_bytes)
        s.add(VIEWS_FOOTER_READS, self.scanner.footer_reads)
        return Observation(s, _checks(scan, self.writable_for), _details(scan), ViewFindings(
            stale=tuple(StaleView(v.compiled, v.source) for v in scan.stale),
            orphaned=tuple(scan.orphaned), uncompiled=tuple(scan.uncompiled)))


def _checks(scan: ViewScan, writable_for: str) -> list[Check]:
    where = scan.compiled_dir
    if scan.dir_exists:
        exists = Check("compiled directory", Verdict.OK, f"{where} exists")
    else:
        exists = Check("compiled directory", Verdict.PROBLEM, f"{where} does not exist: every render fails")
    if scan.dir_writable:
        writable = Check("compiled directory writable", Verdict.OK, f"{where} is writable {writable_for}")
    else:
        writable = Check("compiled directory writable", Verdict.PROBLEM,
                         f"{where} is not writable {writable_for}: views cannot be recompiled")
    uncompiled = Check.from_items("uncompiled views", scan.uncompiled, "every source is compiled",
                                  "{n} source(s) not compiled yet: compiled on first request")
    if uncompiled.items:
        # Laravel compiles a view on its first request: normal after a deploy or for rarely used
        # views. The uncompiled-views alert, with its `for:`, judges when it stops being normal.
        uncompiled = replace(uncompiled, verdict=Verdict.NOTE)
    return [
        exists,
        writable,
        Check.from_items("stale views", [f"{v.compiled} (source {v.source})" for v in scan.stale],
                         "no compiled view is older than its source",
                         "{n} compiled view(s) older than their source"),
        Check.from_items("orphaned views", scan.orphaned, "every compiled view has its source",
                         "{n} compiled view(s) whose source is gone"),
        uncompiled,
        Check.from_items("footerless views", scan.footerless, "every compiled view ends with its footer",
                         "{n} compiled file(s) without a PATH footer (half-written or foreign)"),
        Check.from_items("unreadable views", scan.unreadable, "every view file is readable",
                         "{n} view file(s) or directories cachewarden's own user cannot read"),
        Check.from_items("foreign-owned views", scan.foreign_owned,
                         "every compiled view has the directory's owner",
                         "{n} compiled view(s) owned by another user than the directory"),
    ]


def _details(scan: ViewScan) -> dict[str, Any]:
    return {
        "views_dir": scan.views_dir,
        "compiled_dir": scan.compiled_dir,
        "stale": [{"compiled": v.compiled, "source": v.source} for v in scan.stale],
        "orphaned": list(scan.orphaned),
        "uncompiled": list(scan.uncompiled),
        "footerless": list(scan.footerless),
    }
