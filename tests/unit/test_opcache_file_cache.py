"""The file-cache scan on a hand-made tree laid out as PHP 8.2 writes it, and the purge's guards."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from exporter.config import parse
from exporter.fs.opcache_file_cache import entry_relpath, scan_file_cache
from exporter.heal.actions.opcache_file_cache import FileCacheFindings, check_file_cache_dir, purge
from exporter.heal.actions.safety import UnsafeTarget

SYSTEM_ID = "5605b5ef980d64f76a7c2b10eed887dd"
OTHER_ID = "0123456789abcdef0123456789abcdef"


def entry(file_cache: Path, source: Path, written: float, system_id: str = SYSTEM_ID) -> Path:
    path = file_cache / system_id / str(source).lstrip("/")
    path = path.with_name(path.name + ".bin")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"OPCACHE\0" + system_id.encode())
    os.utime(path, (written, written))
    return path


def source(path: Path, mtime: float, text: str = "<?php") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


@pytest.mark.parametrize(("path", "expected"), [
    ("/var/www/a.php", "var/www/a.php.bin"),
    ("relative.php", None),
    ("/var/www/../etc/passwd", None),
    ("/var/./www/a.php", None),
    ("/var//www/a.php", None),
])
def test_entry_paths_mirror_absolute_script_paths_and_refuse_dot_components(
        path: str, expected: str | None) -> None:
    assert entry_relpath(path) == expected


def test_entries_are_judged_against_their_source_by_write_time(tmp_path: Path) -> None:
    fc, app = tmp_path / "fc", tmp_path / "app"
    now = time.time()  # every source's inode change time: written just now
    fresh = source(app / "fresh.php", now - 100)
    entry(fc, fresh, now + 100)  # written after the source's last change of any kind
    changed = source(app / "changed.php", now + 200)
    entry(fc, changed, now + 100)
    replaced = source(app / "replaced.php", now - 1000)  # rsync -a: old mtime, new inode change time
    entry(fc, replaced, now - 50)
    entry(fc, app / "gone.php", now - 50)

    scan = scan_file_cache(str(fc), {})

    assert scan.complete
    assert scan.system_id == SYSTEM_ID
    assert scan.entries == 4
    assert scan.stale == [str(changed)]
    assert scan.suspect == [str(replaced)]
    assert scan.orphaned == [str(app / "gone.php")]
    assert scan.oldest_stale_mtime == int(now + 200)


def test_the_agents_stats_are_used_for_cached_scripts(tmp_path: Path) -> None:
    fc, app = tmp_path / "fc", tmp_path / "app"
    now = time.time()
    page = source(app / "page.php", now - 100)
    entry(fc, page, now - 50)
    # What FPM saw a moment ago wins over a second stat by the sidecar.
    scan = scan_file_cache(str(fc), {str(page): (int(now), int(now))})
    assert scan.stale == [str(page)]


def test_other_release_entries_are_counted_against_the_release_given(tmp_path: Path) -> None:
    fc, releases = tmp_path / "fc", tmp_path / "releases"
    now = time.time()
    old = source(releases / "1" / "a.php", now - 100)
    new = source(releases / "2" / "a.php", now - 100)
    entry(fc, old, now - 50)
    entry(fc, new, now - 50)
    scan = scan_file_cache(str(fc), {}, release_dir=str(releases / "2"))
    assert scan.outside_release == [str(old)]


def test_links_and_foreign_files_are_refused_not_followed(tmp_path: Path) -> None:
    fc, app, outside = tmp_path / "fc", tmp_path / "app", tmp_path / "outside"
    now = time.time()
    entry(fc, source(app / "a.php", now - 100), now - 50)
    (outside / "deep").mkdir(parents=True)
    source(outside / "deep" / "x.php.bin", now)
    folder = fc / SYSTEM_ID / str(app).lstrip("/")
    (folder / "escape").symlink_to(outside)
    (folder / "link.php.bin").symlink_to(outside / "deep" / "x.php.bin")
    os.link(outside / "deep" / "x.php.bin", folder / "hard.php.bin")
    (folder / "notes.txt").write_text("x")

    scan = scan_file_cache(str(fc), {})

    assert scan.entries == 1
    assert sorted(scan.refused) == sorted(f"{folder}/{n}" for n in ("escape", "link.php.bin", "hard.php.bin",
                                                                      "notes.txt"))


def test_the_folder_of_the_running_build_is_the_one_holding_the_cached_scripts(tmp_path: Path) -> None:
    fc, app = tmp_path / "fc", tmp_path / "app"
    now = time.time()
    page = source(app / "page.php", now - 100)
    entry(fc, page, now - 50, SYSTEM_ID)
    newer = entry(fc, app / "other.php", now - 50, OTHER_ID)
    os.utime(newer.parents[len(newer.relative_to(fc).parts) - 2], (now, now))  # the other folder is newer

    scan = scan_file_cache(str(fc), {str(page): (int(now - 100), int(now - 100))})

    assert scan.system_id == SYSTEM_ID
    assert scan.other_system_ids == [OTHER_ID]
    assert scan.entries == 1


def test_a_missing_directory_is_a_problem_not_an_empty_cache(tmp_path: Path) -> None:
    scan = scan_file_cache(str(tmp_path / "nope"), {})
    assert not scan.complete
    assert "No such file or directory" in (scan.problem or "")


def test_no_system_id_folder_yet_is_an_empty_cache(tmp_path: Path) -> None:
    (tmp_path / "fc").mkdir()
    scan = scan_file_cache(str(tmp_path / "fc"), {})
    assert scan.complete
    assert scan.system_id is None
    assert scan.entries == 0


def test_purge_refuses_a_top_level_directory_or_one_holding_an_app(tmp_path: Path) -> None:
    app = tmp_path / "var" / "www" / "shop"
    (app / "resources" / "views").mkdir(parents=True)
    (app / "storage" / "framework" / "views").mkdir(parents=True)
    config = parse({"laravel": [{"name": "shop", "root": str(app)}]})
    with pytest.raises(UnsafeTarget, match="top-level"):
        check_file_cache_dir("/tmp", config)
    with pytest.raises(UnsafeTarget, match="contains"):
        check_file_cache_dir(str(tmp_path / "var"), config)
    with pytest.raises(UnsafeTarget, match="absolute"):
        check_file_cache_dir("relative/cache", config)


def test_purge_rechecks_each_reason_right_before_deleting(tmp_path: Path) -> None:
    fc, app = tmp_path / "fc", tmp_path / "app"
    now = time.time()
    gone = entry(fc, app / "gone.php", now + 100)
    back = entry(fc, app / "back.php", now + 100)
    source(app / "back.php", now - 100)  # its source came back since the measurement
    stale_src = source(app / "stale.php", now + 200)
    stale = entry(fc, stale_src, now + 100)
    findings = FileCacheFindings(str(fc), SYSTEM_ID, None, {
        "orphaned": [str(app / "gone.php"), str(app / "back.php")], "stale": [str(stale_src)],
        "suspect": [], "outside_release": []})

    outcome = purge(fc, findings, dry_run=False)

    assert sorted(outcome.done) == sorted([f"deleted {gone} (orphaned)", f"deleted {stale} (stale)"])
    assert outcome.refused == [f"{back}: no longer orphaned (fresh)"]
    assert back.exists()


def test_purge_of_other_release_entries_keeps_the_current_release(tmp_path: Path) -> None:
    fc, releases = tmp_path / "fc", tmp_path / "releases"
    now = time.time()
    old = entry(fc, source(releases / "1" / "a.php", now - 100), now + 100)
    new = entry(fc, source(releases / "2" / "a.php", now - 100), now + 100)
    findings = FileCacheFindings(str(fc), SYSTEM_ID, str(releases / "2"), {
        "outside_release": [str(releases / "1" / "a.php"), str(releases / "2" / "a.php")],
        "orphaned": [], "stale": [], "suspect": []})

    outcome = purge(fc, findings, dry_run=False)

    assert outcome.done == [f"deleted {old} (outside_release)"]
    assert outcome.refused == [f"{new}: no longer outside_release (fresh)"]
    assert new.exists()
