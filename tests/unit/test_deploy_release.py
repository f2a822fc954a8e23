"""Which folders a deploy may touch, the release's own paths, and what changed between two releases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.config import LaravelTarget, parse
from exporter.deploy.release import (
    ReleaseError,
    accept_release,
    changed_scripts,
    check_dotenv,
    list_views,
    listed_changes,
    release_target,
)


def laravel(root: Path, **extra: str) -> LaravelTarget:
    return parse({"laravel": [{"name": "shop", "root": str(root), **extra}]}).laravel[0]


def release(base: Path, n: int, env: str = "APP_NAME=shop\n") -> Path:
    d = base / "releases" / str(n)
    (d / "resources" / "views" / "mail").mkdir(parents=True)
    (d / "storage" / "framework" / "views").mkdir(parents=True)
    (d / "resources" / "views" / "home.blade.php").write_text("home")
    (d / "resources" / "views" / "mail" / "welcome.blade.php").write_text("hi")
    (d / ".env").write_text(env)
    return d


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    release(tmp_path, 1)
    release(tmp_path, 2)
    (tmp_path / "current").symlink_to("releases/1")
    return tmp_path


def test_a_release_is_the_app_root_or_a_folder_beside_the_one_current_points_to(layout: Path) -> None:
    app = laravel(layout / "current")
    assert accept_release(None, app, None) == layout / "releases" / "1"
    assert accept_release(str(layout / "releases" / "2"), app, None) == layout / "releases" / "2"
    assert accept_release(str(layout / "current"), app, None) == layout / "releases" / "1"
    for bad in ("/etc", str(layout), str(layout / "releases" / "2" / "resources"), "relative"):
        with pytest.raises(ReleaseError):
            accept_release(bad, app, None)
    # A symlink beside the releases that leads elsewhere is judged by where it leads.
    (layout / "releases" / "evil").symlink_to("/etc")
    with pytest.raises(ReleaseError):
        accept_release(str(layout / "releases" / "evil"), app, None)


def test_without_a_current_symlink_only_the_root_itself_is_a_release(layout: Path) -> None:
    app = laravel(layout / "releases" / "1")
    with pytest.raises(ReleaseError):
        accept_release(str(layout / "releases" / "2"), app, None)
    assert accept_release(str(layout / "releases" / "1"), app, None) == layout / "releases" / "1"


def test_the_releases_paths_are_derived_from_it_with_its_own_env(layout: Path) -> None:
    (layout / "releases" / "2" / "compiled").mkdir()
    (layout / "releases" / "2" / ".env").write_text("VIEW_COMPILED_PATH=compiled\n")
    app = laravel(layout / "current")
    new = release_target(app, layout / "releases" / "2")
    assert new.root == layout / "releases" / "2"
    assert new.views_dir == layout / "releases" / "2" / "resources" / "views"
    assert new.compiled_dir == layout / "releases" / "2" / "compiled"
    # The configured target is left as it was.
    assert app.compiled_dir == layout / "current" / "storage" / "framework" / "views"


def test_a_compiled_path_set_in_the_configuration_stays_unless_it_lies_under_the_root(layout: Path) -> None:
    shared = layout / "shared"
    shared.mkdir()
    app = laravel(layout / "current", compiled_path=str(shared))
    assert release_target(app, layout / "releases" / "2").compiled_dir == shared
    under_root = layout / "current" / "storage" / "framework" / "views"
    inside = laravel(layout / "current", compiled_path=str(under_root))
    assert release_target(inside, layout / "releases" / "2").compiled_dir == (
        layout / "releases" / "2" / "storage" / "framework" / "views")


def test_an_env_laravel_cannot_read_is_named_with_its_line(layout: Path) -> None:
    assert check_dotenv(layout / "releases" / "1") is None
    (layout / "releases" / "2" / ".env").write_text("APP_ENV=production\nAPP_NAME=My Shop\n")
    problem = check_dotenv(layout / "releases" / "2")
    assert problem is not None
    assert "line 2" in problem
    assert "Laravel cannot boot with it" in problem


def test_views_are_listed_by_real_path(layout: Path) -> None:
    views = list_views(layout / "current" / "resources" / "views")
    base = layout / "releases" / "1" / "resources" / "views"
    assert views == [str(base / "home.blade.php"), str(base / "mail" / "welcome.blade.php")]


def test_changed_scripts_compare_contents_not_times(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for d in (old, new):
        (d / "app").mkdir(parents=True)
        (d / "storage").mkdir()
        (d / "app" / "Same.php").write_text("<?php class Same {}")
        (d / "storage" / "cache.php").write_text(f"<?php // {d.name}")
    (old / "app" / "Changed.php").write_text("<?php class Changed { const V = 1; }")
    (new / "app" / "Changed.php").write_text("<?php class Changed { const V = 2; }")
    (new / "app" / "Added.php").write_text("<?php class Added {}")
    (new / "resources").mkdir()
    (new / "resources" / "home.blade.php").write_text("a view, not a script")
    os.utime(new / "app" / "Same.php", (1, 1))
    assert changed_scripts(old, new) == [str(new / "app" / "Added.php"), str(new / "app" / "Changed.php")]


def test_a_changed_file_list_names_nothing_outside_the_release(tmp_path: Path) -> None:
    lines = ["app/A.php", "  app/B.php  ", "../../etc/x.php", "/etc/y.php", "README.md",
             "resources/views/home.blade.php", "app/A.php"]
    assert listed_changes(lines, tmp_path) == [
        str(tmp_path / "app" / "A.php"), str(tmp_path / "app" / "B.php")]
