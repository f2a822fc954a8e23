"""The views collector: metrics, checks and details from a scan, a timed-out scan being stopped, a hung
one not starving other work, and whom the compiled directory's writability is judged for."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
from exporter.fs.footer import read_tail
from exporter.fs.view_sources import ScanCancelled
from exporter.scheduler import Scheduler
from tests.support.blade import T0, AppTree
from tests.support.wait import async_wait_for


def _collector(app: AppTree, php_user: str | None = None, **kwargs: object) -> ViewsCollector:
    target = LaravelTarget(name="shop", root=app.views.parent.parent, views_path=app.views,
                           compiled_path=app.compiled, php_user=php_user)
    return ViewsCollector(target, interval=60.0, timeout=5.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def closing() -> AsyncIterator[list[ViewsCollector]]:
    """Collectors appended here have their walk thread shut down after the test."""
    collectors: list[ViewsCollector] = []
    yield collectors
    for collector in collectors:
        await collector.close()


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
    # Laravel compiles a view on its first request: worth listing, not a problem for `check`.
    assert checks["uncompiled views"].verdict is Verdict.NOTE
    assert checks["uncompiled views"].total_items == 2
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
    """A scan that waits until it is told to stop, then walks on with that flag set; records the end."""

    def __init__(self, app: AppTree) -> None:
        super().__init__(app.views, app.compiled)
        self.started = threading.Event()
        self.ended: list[BaseException | None] = []
        self.done = threading.Event()

    def scan(self, cancelled: threading.Event | None = None) -> ViewScan:
        assert cancelled is not None
        self.started.set()
        cancelled.wait(timeout=10)
        try:
            result = super().scan(cancelled)
        except BaseException as exc:
            self.ended.append(exc)
            raise
        else:
            self.ended.append(None)
            return result
        finally:
            self.done.set()


async def test_a_timed_out_collection_stops_its_walk_and_the_collector_goes_down(
        tmp_path: Path, closing: list[ViewsCollector]) -> None:
    app = AppTree(tmp_path / "shop")
    for i in range(3000):  # enough entries for the walk to look at its cancel flag
        (app.compiled / f"{i}.txt").touch()
    scanner = BlockingScanner(app)
    collector = _collector(app, scanner=scanner)
    closing.append(collector)
    collector.timeout = 0.2
    scheduler = Scheduler([collector])

    status = await scheduler.collect("views", "shop")

    assert status.up is False
    assert status.error is not None
    assert "timed out" in status.error
    assert scanner.started.is_set()
    assert scanner.done.wait(timeout=10)
    assert len(scanner.ended) == 1
    assert isinstance(scanner.ended[0], ScanCancelled)  # the walk itself stopped, not ran to its end


class HungReader:
    """A footer read stuck like one on a dead NFS mount: deaf to the cancel flag until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, path: str, size: int, length: int) -> bytes:
        self.entered.set()
        self.release.wait(timeout=30)
        return read_tail(path, size, length)


async def test_a_hung_walk_fails_later_collections_at_once_and_leaves_the_shared_pool_free(
        tmp_path: Path, closing: list[ViewsCollector]) -> None:
    app = AppTree(tmp_path / "shop")
    app.compile(app.source("home.blade.php"))
    reader = HungReader()
    collector = _collector(app, scanner=app.scanner(reader=reader))
    closing.append(collector)
    collector.timeout = 0.2
    scheduler = Scheduler([collector])
    # More collections than asyncio's default pool has threads: queued walks would fill it.
    attempts = min(32, (os.cpu_count() or 1) + 4) + 2
    try:
        errors = [(await scheduler.collect("views", "shop")).error for _ in range(attempts)]

        assert reader.entered.is_set()
        assert errors[0] == "timed out after 0.2s"
        assert errors[1:] == ["RuntimeError: previous scan still running (hung filesystem?)"] * (attempts - 1)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 1), timeout=2) == 1
    finally:
        reader.release.set()

    async def recovered() -> bool:
        return bool((await scheduler.collect("views", "shop")).up)

    await async_wait_for(recovered, timeout=10, message="a collection succeeding once the read returns")
    assert scheduler.status("views", "shop").observation is not None


async def test_a_closed_collector_stops_its_walk_thread(tmp_path: Path) -> None:
    collector = _collector(AppTree(tmp_path / "shop"))
    await collector.collect()

    await collector.close()

    with pytest.raises(RuntimeError, match="shutdown"):
        await collector.collect()


def _dir_writable(collector: ViewsCollector) -> tuple[float | None, str]:
    obs = collector.observe(collector.scanner.scan(), now=T0)
    [check] = [c for c in obs.checks if c.name == "compiled directory writable"]
    return obs.samples.value(VIEWS_DIR_WRITABLE), check.summary


def test_without_php_user_writability_is_cachewardens_own_and_says_so(tmp_path: Path) -> None:
    app = AppTree(tmp_path / "shop")

    value, summary = _dir_writable(_collector(app))

    assert value == (1 if os.access(app.compiled, os.W_OK | os.X_OK) else 0)
    assert "for cachewarden's own user" in summary


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to www-data needs root")
def test_with_php_user_writability_is_judged_for_that_user_from_owner_group_and_mode(tmp_path: Path) -> None:
    import pwd

    www = pwd.getpwnam("www-data")
    app = AppTree(tmp_path / "shop")
    os.chown(app.compiled, 0, 0)
    os.chmod(app.compiled, 0o755)  # noqa: S103 - the modes under test
    collector = _collector(app, php_user="www-data")

    assert _dir_writable(collector) == (0, f"{app.compiled} is not writable by www-data: views cannot be "
                                           "recompiled")
    os.chown(app.compiled, 0, www.pw_gid)
    os.chmod(app.compiled, 0o775)  # noqa: S103 - the modes under test
    assert _dir_writable(collector)[0] == 1  # through its group
    os.chmod(app.compiled, 0o757)  # noqa: S103 - the modes under test
    assert _dir_writable(collector)[0] == 0  # the group class applies to it, not other
    os.chown(app.compiled, www.pw_uid, 0)
    os.chmod(app.compiled, 0o700)
    assert _dir_writable(collector) == (1, f"{app.compiled} is writable by www-data")
    assert _dir_writable(_collector(app, php_user="33:0"))[0] == 1  # numeric ids
    assert _dir_writable(_collector(app, php_user="root"))[0] == 1


def test_an_unknown_php_user_or_group_is_a_configuration_error_named_by_its_path(tmp_path: Path) -> None:
    from exporter.config import ConfigError, parse

    app = AppTree(tmp_path / "shop")
    laravel = {"name": "shop", "root": str(tmp_path / "shop"), "views_path": str(app.views),
               "compiled_path": str(app.compiled)}

    with pytest.raises(ConfigError) as raised:
        parse({"laravel": [{**laravel, "php_user": "no-such-user-here"},
                           {**laravel, "name": "b", "php_user": "www-data:no-such-group"},
                           {**laravel, "name": "c", "php_user": "4242"}]})

    problems = "\n".join(raised.value.problems)
    assert "laravel[0].php_user" in problems
    assert "no such user: 'no-such-user-here'" in problems
    assert "laravel[1].php_user" in problems
    assert "no such group: 'no-such-group'" in problems
    assert "laravel[2].php_user" in problems
    assert "4242:GROUP" in problems
    assert str(parse({"laravel": [{**laravel, "php_user": "www-data:www-data"}]}).laravel[0].php_user) == (
        "www-data:www-data")
