"""The view actions never change or delete anything outside the compiled directory, whatever is planted."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.collectors.base import Observation
from exporter.config import Config, parse
from exporter.findings import StaleView, ViewFindings
from exporter.heal.actions import ACTION_CLASSES
from exporter.heal.actions.base import Action, ActionContext, ActionError, ActionOutcome
from exporter.heal.actions.safety import CompiledRoots
from exporter.heal.actions.views_orphans import RemoveOrphans
from exporter.heal.actions.views_permissions import FixPermissions
from exporter.heal.actions.views_recompile import Recompile
from exporter.heal.phpexec import PhpExecutor
from exporter.metrics import Samples
from tests.support.healing import Swapper, compiled_dir, make_app_dir, write_compiled

NAME = "a" * 40 + ".php"  # named like a compiled view


def config(root: Path, **laravel: Any) -> Config:
    return parse({"laravel": [{"name": "shop", "root": str(root), **laravel}],
                  "heal": {"views_mode": "0644"}})


def context(cfg: Config) -> ActionContext:
    return ActionContext(cfg, PhpExecutor(cfg), CompiledRoots(cfg.laravel))


async def fix_permissions(cfg: Config, ctx: ActionContext | None = None) -> ActionOutcome:
    return await FixPermissions(ctx or context(cfg)).run("shop", None, dry_run=False)


async def remove_orphans(cfg: Config, paths: list[str]) -> ActionOutcome:
    observation = Observation(Samples("shop"), findings=ViewFindings(orphaned=tuple(paths)))
    return await RemoveOrphans(context(cfg)).run("shop", observation, dry_run=False)


def secret(outside: Path) -> Path:
    """A private file outside the app, named like a compiled view and ending like one."""
    outside.mkdir(exist_ok=True)
    key = outside / NAME
    key.write_text("<?php /**PATH /nonexistent/gone.blade.php ENDPATH**/ ?>")
    key.chmod(0o600)
    return key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_fix_permissions_sets_modes_of_compiled_views_and_the_directory(tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    view = write_compiled(root, str(root / "resources/views/a.blade.php"))
    view.chmod(0o600)
    compiled_dir(root).chmod(0o700)
    stray = compiled_dir(root) / "notes.txt"
    stray.write_text("x")
    stray.chmod(0o600)
    outcome = await fix_permissions(config(root))
    assert outcome.ok, outcome.errors
    assert mode(view) == 0o644
    assert mode(compiled_dir(root)) == 0o755
    assert mode(stray) == 0o600, "only files named like compiled views are touched"


@pytest.mark.parametrize("link", ["storage/framework/views", "storage"])
async def test_a_symlink_on_the_derived_compiled_path_is_refused(tmp_path: Path, link: str) -> None:
    root = make_app_dir(tmp_path / "shop")
    key = secret(tmp_path / "outside")
    # The app's user swaps a component of the path for a link to a directory it should not reach.
    target = root / link
    shutil.rmtree(target)
    if link == "storage":
        (tmp_path / "outside" / "framework").mkdir()
        (tmp_path / "outside" / "framework" / "views").symlink_to(tmp_path / "outside")
    target.symlink_to(tmp_path / "outside")
    cfg = config(root)
    with pytest.raises(ActionError, match="symlink"):
        await fix_permissions(cfg)
    with pytest.raises(ActionError, match="symlink"):
        await remove_orphans(cfg, [str(root / "storage/framework/views" / NAME)])
    assert mode(key) == 0o600
    assert key.exists()


async def test_an_explicitly_configured_symlinked_directory_is_the_operators_choice(tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    real = tmp_path / "compiled"
    real.mkdir()
    (real / NAME).write_text("x")
    (real / NAME).chmod(0o600)
    link = tmp_path / "compiled-link"
    link.symlink_to(real)
    outcome = await fix_permissions(config(root, compiled_path=str(link)))
    assert outcome.ok
    assert mode(real / NAME) == 0o644


# Every action that reads, writes or deletes in the compiled directory goes through the one gate.
TREE_ACTIONS: dict[str, type[Action]] = {
    "views.remove_orphans": RemoveOrphans,
    "views.recompile": Recompile,
    "views.fix_permissions": FixPermissions,
}


# The other actions, and why no file of theirs needs the gate.
OTHER_ACTIONS = {
    "opcache.purge_file_cache": "deletes only in the file cache, reached by fs.pinned.open_directory",
    "opcache.invalidate": "asks FPM; reads the file cache like the purge",
    "opcache.reset": "asks FPM",
    "fpm.reload": "runs the configured restart command",
    "cache.warm": "runs the configured commands, fetches the configured URLs",
    "laravel.cache_rebuild": "writes only in a bootstrap cache directory inside the app root, pinned and "
                             "written through exporter.fs.pinned (open_directory, PinnedDirectory.replace)",
}


def test_every_action_is_either_behind_the_gate_or_said_to_touch_no_compiled_view() -> None:
    # A new action must be put in one list or the other, and so decided on.
    assert {c.name for c in ACTION_CLASSES} == set(TREE_ACTIONS) | set(OTHER_ACTIONS)
    assert set(TREE_ACTIONS).isdisjoint(OTHER_ACTIONS)


async def run_action(name: str, ctx: ActionContext, planted: Path) -> ActionOutcome:
    """Run a tree-touching action with findings that would make it act on `planted`."""
    source = str(planted.parent / "gone.blade.php")
    observation = Observation(Samples("shop"), findings=ViewFindings(
        orphaned=(str(planted),), stale=(StaleView(str(planted), source),), uncompiled=(source,)))
    return await TREE_ACTIONS[name](ctx).run("shop", observation, dry_run=False)


@pytest.mark.parametrize("action", sorted(TREE_ACTIONS))
async def test_a_directory_that_resolves_elsewhere_after_start_is_refused(
        tmp_path: Path, action: str) -> None:
    real = tmp_path / "compiled"
    real.mkdir()
    link = tmp_path / "compiled-link"
    link.symlink_to(real)
    cfg = config(make_app_dir(tmp_path / "shop"), compiled_path=str(link))
    ctx = context(cfg)
    key = secret(tmp_path / "outside")
    link.unlink()
    link.symlink_to(tmp_path / "outside")
    with pytest.raises(ActionError, match=r"not .* as at start"):
        await run_action(action, ctx, link / NAME)
    assert mode(key) == 0o600
    assert key.exists()


@pytest.mark.parametrize("action", sorted(TREE_ACTIONS))
async def test_a_directory_replaced_in_place_after_start_is_refused(tmp_path: Path, action: str) -> None:
    # The recompile would have no PHP to run: the gate must refuse before that is even looked at.
    root = make_app_dir(tmp_path / "shop")
    cfg = config(root)
    ctx = context(cfg)
    compiled_dir(root).rename(tmp_path / "old")
    compiled_dir(root).mkdir()
    key = secret(compiled_dir(root))
    key.chmod(0o600)
    with pytest.raises(ActionError, match="replaced since start"):
        await run_action(action, ctx, key)
    assert mode(key) == 0o600
    assert key.exists()


async def test_symlinked_files_in_the_compiled_directory_are_neither_followed_nor_removed(
        tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    key = secret(tmp_path / "outside")
    planted = compiled_dir(root) / NAME
    planted.symlink_to(key)
    cfg = config(root)
    perms = await fix_permissions(cfg)
    orphans = await remove_orphans(cfg, [str(planted)])
    assert mode(key) == 0o600
    assert planted.is_symlink()
    assert key.exists()
    assert any("symlink" in r for r in perms.refused)
    assert any("symlink" in r for r in orphans.refused)
    assert orphans.done == []


async def test_hard_links_to_files_elsewhere_are_left_alone(tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    key = secret(root / "private")  # same filesystem, so a hard link is possible
    planted = compiled_dir(root) / NAME
    os.link(key, planted)
    cfg = config(root)
    perms = await fix_permissions(cfg)
    orphans = await remove_orphans(cfg, [str(planted)])
    assert mode(key) == 0o600
    assert planted.exists()
    assert any("hard links" in r for r in perms.refused)
    assert any("hard links" in r for r in orphans.refused)


@pytest.mark.parametrize("compiled_path", ["..", "."])
async def test_a_compiled_path_holding_the_app_is_refused(tmp_path: Path, compiled_path: str) -> None:
    root = make_app_dir(tmp_path / "apps" / "shop")
    key = secret(root / "private")
    cfg = config(root, compiled_path=str(root / compiled_path))
    with pytest.raises(ActionError, match="contains"):
        await fix_permissions(cfg)
    with pytest.raises(ActionError, match="contains"):
        await remove_orphans(cfg, [str(key)])
    assert mode(key) == 0o600
    assert key.exists()


async def test_a_compiled_path_from_the_env_outside_the_app_is_refused(tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    key = secret(tmp_path / "outside")
    (root / ".env").write_text(f"VIEW_COMPILED_PATH={tmp_path / 'outside'}\n")
    with pytest.raises(ActionError, match="outside the app root"):
        await fix_permissions(config(root))
    assert mode(key) == 0o600


async def test_a_storage_path_from_the_env_outside_the_app_is_treated_as_derived_and_refused(
    tmp_path: Path,
) -> None:
    # LARAVEL_STORAGE_PATH comes from the app's own file, like VIEW_COMPILED_PATH: the same checks apply.
    root = make_app_dir(tmp_path / "shop")
    (tmp_path / "outside" / "framework").mkdir(parents=True)
    key = secret(tmp_path / "outside" / "framework" / "views")
    (root / ".env").write_text(f"LARAVEL_STORAGE_PATH={tmp_path / 'outside'}\n")
    with pytest.raises(ActionError, match="outside the app root"):
        await fix_permissions(config(root))
    assert mode(key) == 0o600


@pytest.mark.parametrize("action", ["views.remove_orphans", "views.fix_permissions"])
async def test_swapping_the_directory_for_a_symlink_never_gets_a_file_outside_changed(
        tmp_path: Path, action: str) -> None:
    # views.recompile meets the same attack through real PHP in tests/integration/test_heal_files.py.
    root = make_app_dir(tmp_path / "shop")
    outside = tmp_path / "outside"
    names = [f"{i:040x}.php" for i in range(8)]
    for directory in (compiled_dir(root), outside):
        directory.mkdir(exist_ok=True)
        for name in names:
            (directory / name).write_text("<?php /**PATH /nonexistent/gone.blade.php ENDPATH**/ ?>")
            (directory / name).chmod(0o600)
    ctx = context(config(root))
    orphaned = [str(compiled_dir(root) / n) for n in names]
    observation = Observation(Samples("shop"), findings=ViewFindings(orphaned=tuple(orphaned)))
    swapper = Swapper(compiled_dir(root), outside)
    acted = 0
    deadline = time.monotonic() + 20
    swapper.start()
    try:
        while (acted < 20 or swapper.swaps < 40) and time.monotonic() < deadline:
            try:
                await TREE_ACTIONS[action](ctx).run("shop", observation, dry_run=False)
            except ActionError:
                continue  # refused at the gate
            acted += 1
    finally:
        swapper.stop()

    assert sorted((p.name, mode(p)) for p in outside.iterdir()) == [(n, 0o600) for n in names]
    assert acted >= 20
    assert swapper.swaps >= 40
    # And the real directory was acted on.
    left = [mode(p) for p in compiled_dir(root).iterdir()]
    assert left == ([] if action == "views.remove_orphans" else [0o644] * len(names))
