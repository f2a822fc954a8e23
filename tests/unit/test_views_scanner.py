"""The compiled-view scanner on trees built in tmp_path with synthetic compiled files."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.fs import compiled_views
from exporter.fs.compiled_views import CompiledViewScanner
from exporter.fs.footer import parse_footer, read_tail
from exporter.fs.view_sources import ScanCancelled
from tests.support.blade import T0, AppTree, set_mtime


class TakenListing:
    """A directory listing read to its end at once, so the test can change the directory after it."""

    def __init__(self, listing: Iterator[os.DirEntry[str]]) -> None:
        with listing as entries:  # type: ignore[attr-defined]
            self.entries = list(entries)

    def __iter__(self) -> Iterator[os.DirEntry[str]]:
        return iter(self.entries)

    def __enter__(self) -> TakenListing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _lists(scandir_arg: Any, directory: Path) -> bool:
    """Whether os.scandir was called on `directory`: the scanner lists directories by descriptor."""
    return isinstance(scandir_arg, int) and os.path.samestat(os.fstat(scandir_arg), directory.stat())


@pytest.fixture
def app(tmp_path: Path) -> AppTree:
    return AppTree(tmp_path / "app")


def test_fresh_stale_orphaned_uncompiled_and_footerless_are_told_apart(app: AppTree) -> None:
    fresh = app.compile(app.source("home.blade.php", T0), T0 + 10)
    stale = app.compile(app.source("layouts/app.blade.php", T0 + 20), T0 + 10)
    gone = app.compile(app.views / "deleted.blade.php", T0 + 10)
    uncompiled = app.source("components/alert.blade.php")
    footerless = app.compile(app.source("half.blade.php"), footer=False)

    scan = app.scanner().scan()

    assert scan.sources == 4
    assert scan.compiled == 4  # .gitignore is not a compiled view
    assert [(v.compiled, v.source) for v in scan.stale] == [
        (str(stale), str(app.views / "layouts/app.blade.php"))]
    assert scan.orphaned == [str(gone)]
    assert sorted(scan.uncompiled) == sorted([str(uncompiled), str(app.views / "half.blade.php")])
    assert scan.footerless == [str(footerless)]
    assert str(fresh) not in {v.compiled for v in scan.stale}
    assert scan.dir_exists
    assert scan.dir_writable
    assert scan.free_bytes is not None
    assert scan.free_bytes > 0


def test_a_source_changed_in_the_same_second_as_its_compile_is_stale_as_laravel_decides(
        app: AppTree) -> None:
    # Laravel compares filemtime() seconds with >=: a sub-second newer compile is still expired.
    app.compile(app.source("same.blade.php", T0 + 5.1), T0 + 5.9)
    app.compile(app.source("older.blade.php", T0 + 4.9), T0 + 5.0)

    stale = app.scanner().scan().stale

    assert [Path(v.source).name for v in stale] == ["same.blade.php"]
    assert stale[0].source_mtime == T0 + 5


def test_a_missing_compiled_directory_is_reported_and_every_source_is_uncompiled(app: AppTree) -> None:
    app.source("a.blade.php")
    app.source("b.blade.php")
    (app.compiled / ".gitignore").unlink()
    app.compiled.rmdir()

    scan = app.scanner().scan()

    assert not scan.dir_exists
    assert not scan.dir_writable
    assert scan.free_bytes is None
    assert scan.compiled == 0
    assert len(scan.uncompiled) == 2


def test_a_missing_views_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CompiledViewScanner(tmp_path / "nope", tmp_path).scan()


def test_files_that_cannot_be_opened_are_counted_and_retried_on_the_next_scan(app: AppTree) -> None:
    locked = app.compile(app.source("secret.blade.php"))
    app.compile(app.source("open.blade.php"))
    refused: set[str] = {str(locked)}

    def reader(path: str, size: int, length: int) -> bytes:
        if path in refused:
            raise PermissionError(13, "Permission denied", path)
        return read_tail(path, size, length)

    scanner = app.scanner(reader=reader)
    first = scanner.scan()
    assert first.unreadable == [str(locked)]
    assert first.compiled == 2
    assert first.uncompiled == [str(app.views / "secret.blade.php")]

    refused.clear()  # permissions fixed: the file did not change, yet it is read again
    second = scanner.scan()
    assert second.unreadable == []
    assert second.uncompiled == []
    assert second.footer_reads == 1


def test_compiled_files_deleted_between_listing_and_stat_are_skipped(
        app: AppTree, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = app.compile(app.source("keep.blade.php"))
    victim = app.compile(app.source("victim.blade.php"))
    real_scandir = os.scandir

    def scandir(path: Any) -> TakenListing:
        listing = TakenListing(real_scandir(path))
        if _lists(path, app.compiled):
            victim.unlink()  # listed, not yet stat'ed: the race
        return listing

    monkeypatch.setattr(compiled_views.os, "scandir", scandir)
    scan = app.scanner().scan()

    assert scan.compiled == 1
    assert scan.uncompiled == [str(app.views / "victim.blade.php")]
    assert scan.unreadable == []
    assert scan.orphaned == []
    assert keep.exists()


def test_compiled_files_deleted_between_stat_and_read_are_skipped(app: AppTree) -> None:
    victim = app.compile(app.source("victim.blade.php"))

    def reader(path: str, size: int, length: int) -> bytes:
        Path(path).unlink()
        return read_tail(path, size, length)

    scan = app.scanner(reader=reader).scan()

    assert not victim.exists()
    assert scan.compiled == 0
    assert scan.unreadable == []
    assert scan.footerless == []


def test_sources_deleted_during_the_walk_are_skipped(
        app: AppTree, monkeypatch: pytest.MonkeyPatch) -> None:
    app.source("stays.blade.php")
    goes = app.source("goes.blade.php")
    real_scandir = os.scandir

    def scandir(path: Any) -> TakenListing:
        listing = TakenListing(real_scandir(path))
        if _lists(path, app.views):
            goes.unlink(missing_ok=True)
        return listing

    monkeypatch.setattr(compiled_views.os, "scandir", scandir)
    scan = app.scanner().scan()

    assert scan.sources == 1
    assert scan.uncompiled == [str(app.views / "stays.blade.php")]


class _Unsearchable:
    """A directory entry in a directory that can be listed but not searched (mode r without x): its
    name is known, stat() is refused. Root is never refused, so the refusal is played here."""

    def __init__(self, entry: os.DirEntry[str]) -> None:
        self.name, self.path = entry.name, entry.path

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        raise PermissionError(13, "Permission denied", self.path)

    stat = is_dir


def test_sources_a_directory_lists_but_cannot_stat_are_unreadable(
        app: AppTree, monkeypatch: pytest.MonkeyPatch) -> None:
    app.compile(app.source("home.blade.php"))
    app.source("locked/secret.blade.php")
    app.source("locked/inner/deeper.blade.php")
    real_scandir = os.scandir

    def scandir(path: Any) -> TakenListing:
        listing = TakenListing(real_scandir(path))
        if _lists(path, app.views / "locked"):
            listing.entries = [_Unsearchable(e) for e in listing.entries]  # type: ignore[misc]
        return listing

    monkeypatch.setattr(compiled_views.os, "scandir", scandir)
    scan = app.scanner().scan()

    assert scan.sources == 1
    assert sorted(scan.unreadable) == [str(app.views / "locked/inner"),
                                       str(app.views / "locked/secret.blade.php")]
    assert scan.uncompiled == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_compiled_files_owned_by_another_user_than_the_directory_are_counted(app: AppTree) -> None:
    foreign = app.compile(app.source("a.blade.php"))
    app.compile(app.source("b.blade.php"))
    os.chown(foreign, 4242, 4242)

    assert app.scanner().scan().foreign_owned == [str(foreign)]


def _release(base: Path, name: str, views: list[str]) -> Path:
    root = base / "releases" / name / "resources" / "views"
    for rel in views:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
        set_mtime(root / rel, T0)
    return root


def _point_current(base: Path, release: str) -> None:
    # Swap the symlink atomically, as deploy tools do.
    tmp = base / "current.new"
    tmp.symlink_to(base / "releases" / release)
    tmp.replace(base / "current")


def test_symlinked_releases_match_by_realpath_and_old_releases_are_external(tmp_path: Path) -> None:
    base = tmp_path / "srv"
    compiled = tmp_path / "compiled"
    compiled.mkdir()
    old = _release(base, "1", ["home.blade.php", "old-only.blade.php"])
    new = _release(base, "2", ["home.blade.php", "new-only.blade.php"])
    _point_current(base, "2")
    tree = AppTree.__new__(AppTree)
    tree.views, tree.compiled = base / "current" / "resources" / "views", compiled
    set_mtime(old / "old-only.blade.php", T0 + 60)  # stale against the file Laravel would check
    tree.compile(old / "home.blade.php")
    tree.compile(old / "old-only.blade.php")
    tree.compile(new / "home.blade.php")
    scanner = tree.scanner()

    scan = scanner.scan()

    assert scan.views_dir == str(new)
    assert scan.sources == 2
    assert scan.compiled == 3
    assert scan.external == 2
    assert scan.orphaned == []
    assert [v.source for v in scan.stale] == [str(old / "old-only.blade.php")]
    assert scan.uncompiled == [str(new / "new-only.blade.php")]

    (old / "old-only.blade.php").unlink()  # the old release is pruned
    (old / "home.blade.php").unlink()
    scan = scanner.scan()
    assert scan.external == 0
    assert len(scan.orphaned) == 2
    assert scan.stale == []

    _release(base, "3", ["home.blade.php"])
    _point_current(base, "3")  # a deploy: every compiled file now belongs to an older release
    scan = scanner.scan()
    assert scan.views_dir == str(base / "releases" / "3" / "resources" / "views")
    assert scan.external == 1
    assert len(scan.orphaned) == 2
    assert scan.uncompiled == [str(base / "releases" / "3" / "resources" / "views" / "home.blade.php")]


def test_a_footer_naming_the_source_through_a_symlink_is_this_apps_source(tmp_path: Path) -> None:
    base = tmp_path / "srv"
    compiled = tmp_path / "compiled"
    compiled.mkdir()
    _release(base, "1", ["home.blade.php"])
    _point_current(base, "1")
    tree = AppTree.__new__(AppTree)
    tree.views, tree.compiled = base / "current" / "resources" / "views", compiled
    tree.compile(tree.views / "home.blade.php")  # footer: …/current/…, not the realpath

    scan = tree.scanner().scan()

    assert scan.external == 0
    assert scan.uncompiled == []
    assert scan.orphaned == []


def test_a_rescan_reads_only_footers_of_files_that_changed(app: AppTree) -> None:
    compiled = [app.compile(app.source(f"v{i}.blade.php")) for i in range(20)]
    scanner = app.scanner()
    assert scanner.scan().footer_reads == 20

    assert scanner.scan().footer_reads == 0

    set_mtime(compiled[0], T0 + 30)  # recompiled in place
    replacement = compiled[1].with_suffix(".tmp")
    replacement.write_bytes(compiled[1].read_bytes())
    set_mtime(replacement, T0 + 10)  # same mtime and size: only the inode tells it apart
    replacement.replace(compiled[1])
    compiled[2].unlink()
    scan = scanner.scan()
    assert scan.footer_reads == 2
    assert scan.compiled == 19
    assert scan.uncompiled == [str(app.views / "v2.blade.php")]

    assert scanner.scan().footer_reads == 0
    assert scanner.footer_reads == 22


def test_stale_state_follows_source_changes_without_rereading_footers(app: AppTree) -> None:
    source = app.source("page.blade.php", T0)
    app.compile(source, T0 + 10)
    scanner = app.scanner()
    assert scanner.scan().stale == []

    set_mtime(source, T0 + 11)
    scan = scanner.scan()
    assert [v.source for v in scan.stale] == [str(source)]
    assert scan.footer_reads == 0

    source.unlink()
    scan = scanner.scan()
    assert scan.stale == []
    assert len(scan.orphaned) == 1
    assert scan.footer_reads == 0


def test_the_source_table_is_compacted_without_losing_the_cache(app: AppTree) -> None:
    count = 5000
    sources = [app.source(f"d{i % 10}/v{i}.blade.php") for i in range(count)]
    compiled = [app.compile(s) for s in sources]
    scanner = app.scanner()
    scanner.scan()
    for path in sources[100:] + compiled[100:]:
        path.unlink()

    scan = scanner.scan()
    assert scan.compiled == 100
    assert scan.sources == 100
    assert scan.footer_reads == 0

    set_mtime(sources[7], T0 + 60)
    scan = scanner.scan()
    assert [v.source for v in scan.stale] == [str(sources[7])]
    assert [v.compiled for v in scan.stale] == [str(compiled[7])]
    assert scan.footer_reads == 0
    assert scan.uncompiled == []
    assert scan.orphaned == []


def test_a_cancelled_scan_stops_and_the_next_one_completes(app: AppTree) -> None:
    for i in range(1100):  # more entries than the cancel flag's check interval
        (app.compiled / f"{i}.txt").touch()
    app.compile(app.source("a.blade.php"))
    cancelled = threading.Event()
    cancelled.set()
    scanner = app.scanner()

    with pytest.raises(ScanCancelled):
        scanner.scan(cancelled)

    assert scanner.scan().compiled == 1


def test_footer_parsing_accepts_only_a_footer_at_the_very_end() -> None:
    assert parse_footer(b"<p>x</p><?php /**PATH /a/b.blade.php ENDPATH**/ ?>") == "/a/b.blade.php"
    assert parse_footer(b"x<?php /**PATH /a/b c.blade.php ENDPATH**/ ?>\n") == "/a/b c.blade.php"
    assert parse_footer(b"<?php /**PATH /a/b.blade.php ENDPATH**/ ?><p>more</p>") is None
    assert parse_footer(b"<?php /**PATH /a/b.blade.ph") is None
    assert parse_footer(b"<?php /**PATH relative.blade.php ENDPATH**/ ?>") is None


def test_a_footer_longer_than_the_tail_is_read_in_full(app: AppTree) -> None:
    deep = "/".join(["d" * 60] * 8) + "/deep.blade.php"
    app.compile(app.source(deep))

    scan = app.scanner().scan()

    assert scan.footerless == []
    assert scan.uncompiled == []
    assert scan.compiled == 1


def _scan_summary(scan: compiled_views.ViewScan) -> tuple[object, ...]:
    return (scan.sources, scan.compiled, sorted((v.compiled, v.source) for v in scan.stale),
            sorted(scan.orphaned), sorted(scan.uncompiled), sorted(scan.footerless))


def test_a_directory_listed_in_another_order_is_still_scanned_right(
        app: AppTree, monkeypatch: pytest.MonkeyPatch) -> None:
    # The scanner expects an unchanged directory to be listed in the same order again; when it is
    # not (another filesystem, a rebuilt index), it may read footers again but never answers wrongly.
    sources = [app.source(f"d{i % 7}/v{i}.blade.php") for i in range(600)]
    for i, source in enumerate(sources[:590]):
        app.compile(source, T0 + (-5 if i % 50 == 0 else 10))  # every 50th is stale
    app.compile(app.views / "gone.blade.php")
    scanner = app.scanner()
    expected = _scan_summary(scanner.scan())
    real_scandir = os.scandir

    def reversed_scandir(path: Any) -> TakenListing:
        listing = TakenListing(real_scandir(path))
        listing.entries.reverse()
        return listing

    monkeypatch.setattr(compiled_views.os, "scandir", reversed_scandir)
    reordered = scanner.scan()
    assert _scan_summary(reordered) == expected
    assert len(reordered.stale) == 12
    assert reordered.orphaned == [str(app.compiled_path(app.views / "gone.blade.php"))]
    assert len(reordered.uncompiled) == 10

    assert _scan_summary(scanner.scan()) == expected
    assert scanner.scan().footer_reads == 0  # the new order is the one expected next


def test_files_added_and_removed_in_bulk_are_matched_after_the_gap(app: AppTree) -> None:
    sources = [app.source(f"v{i}.blade.php") for i in range(3000)]
    compiled = [app.compile(s) for s in sources[:2000]]
    scanner = app.scanner()
    scanner.scan()
    for path in compiled[:1500]:  # a run of removals longer than the look-ahead
        path.unlink()
    # Freed inodes are handed to the new files: their own mtimes tell them apart, as nanosecond
    # mtimes of real compiles do.
    added = [app.compile(s, T0 + 20 + i / 1000) for i, s in enumerate(sources[2000:2100])]

    scan = scanner.scan()

    assert scan.compiled == 600
    assert scan.footer_reads <= len(added) + 50  # the survivors are recognised, not re-read
    assert len(scan.uncompiled) == 3000 - 600
    assert scan.stale == []
    assert scan.orphaned == []
    assert scanner.scan().footer_reads == 0


def test_inline_component_templates_in_the_compiled_directory_are_not_compiled_views(app: AppTree) -> None:
    # Laravel writes an inline component's template as <sha1>.blade.php among the compiled views, and
    # compiles it like a view: the template has no footer, its compiled file names it.
    template = app.inline_component('<div class="alert">{{ $slot }}</div>')
    set_mtime(template, T0)
    app.compile(template, T0 + 10)
    app.compile(app.source("home.blade.php"))

    scanner = app.scanner()
    for scan in (scanner.scan(), scanner.scan()):  # the first scan and a rescan
        assert scan.compiled == 2
        assert scan.external == 1
        assert scan.footerless == []
        assert scan.stale == []
        assert scan.orphaned == []


@pytest.mark.skipif(os.geteuid() != 0, reason="refusing root a read needs the reader to decide, as root")
def test_a_file_made_unreadable_after_its_first_scan_is_reported(app: AppTree) -> None:
    locked = app.compile(app.source("secret.blade.php"))

    def reader(path: str, size: int, length: int) -> bytes:
        if not os.stat(path).st_mode & 0o444:  # what the kernel refuses a non-root user
            raise PermissionError(13, "Permission denied", path)
        return read_tail(path, size, length)

    scanner = app.scanner(reader=reader)
    assert scanner.scan().unreadable == []

    os.chmod(locked, 0)  # changes neither inode, size nor mtime: only ctime
    scan = scanner.scan()

    assert scan.unreadable == [str(locked)]
    assert scan.uncompiled == [str(app.views / "secret.blade.php")]


@pytest.mark.skipif(not hasattr(os, "O_NOATIME"), reason="O_NOATIME is Linux-only")
def test_a_refused_noatime_open_falls_back_to_a_plain_read(app: AppTree,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a file's owner (or root) may open it with O_NOATIME; for anyone else Linux answers EPERM.
    app.compile(app.source("home.blade.php", T0), T0 + 10)
    stale = app.compile(app.source("shop.blade.php", T0 + 20), T0 + 10)
    real_open = os.open
    noatime_refused = []

    def open_as_non_owner(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_NOATIME:
            noatime_refused.append(path)
            raise PermissionError(1, "Operation not permitted", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_as_non_owner)
    scan = app.scanner().scan()

    assert len(noatime_refused) == 1  # refused once, then the scan stops asking
    assert scan.compiled == 2
    assert scan.unreadable == []
    assert [v.compiled for v in scan.stale] == [str(stale)]
