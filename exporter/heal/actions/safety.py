"""The one gate every heal action passes before it touches a compiled-view directory.

The app's own user can write below the app root, and the compiled directory may come from the app's
`.env` (VIEW_COMPILED_PATH, LARAVEL_STORAGE_PATH). So a compiled directory that cachewarden derived
itself is trusted only
when no component below the app root is a symlink and it lies inside the root; a `compiled_path` set
in cachewarden's own configuration is the operator's word and may be anywhere safe. Either way the
directory is resolved once, when the heal starts, and pinned by device and inode. `CompiledRoots.open`
is the only way to a compiled directory: it refuses a directory that now resolves elsewhere or was
replaced, and hands out a `PinnedDirectory` (exporter/fs/pinned.py) through whose descriptor every
read, write, rename and delete of the view actions is made, and which checks the pin again after.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from exporter.config import LaravelTarget
from exporter.fs.pinned import PinnedDirectory, open_directory
from exporter.heal.actions.base import ActionError, ActionOutcome

# Laravel's compiled names: sha1 (40 hex, Laravel 5.x-9.x) or xxh128/md5 (32 hex), then ".php".
COMPILED_NAME = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{32})\.php$")


class UnsafeTarget(ActionError):
    """The configured directories are not safe to modify (e.g. the compiled dir contains the app)."""


def looks_compiled(name: str) -> bool:
    return COMPILED_NAME.fullmatch(name) is not None


def symlinked_component(path: Path, below: Path) -> Path | None:
    """The first component of `path` under `below` that is a symlink (`path` itself included)."""
    parts = Path(os.path.normpath(path)).relative_to(os.path.normpath(below)).parts
    current = Path(os.path.normpath(below))
    for part in parts:
        current = current / part
        if os.path.islink(current):
            return current
    return None


def check_compiled_dir(target: LaravelTarget) -> Path:
    """The resolved compiled-view directory, or UnsafeTarget saying why it must not be modified.

    A compiled_path of `..` or a symlink to `/` resolves to a directory holding far more than compiled
    views; acting inside it is refused outright rather than trusted to the per-file checks.
    """
    configured = Path(os.path.normpath(target.compiled_dir))
    app_root = Path(os.path.normpath(target.root))
    if not target.compiled_path_configured:  # decided at load (exporter.config.LaravelTarget)
        if app_root not in configured.parents:
            raise UnsafeTarget(
                f"the compiled directory {configured} (from the app's .env) lies outside the app root; "
                "set laravel[].compiled_path in cachewarden's configuration to heal it")
        link = symlinked_component(configured, app_root)
        if link is not None:
            raise UnsafeTarget(
                f"{link} is a symlink on the way to the compiled directory; refusing to follow it "
                "(set laravel[].compiled_path in cachewarden's configuration if it is meant to be)")
    root = Path(os.path.realpath(configured))
    for other in (target.root, target.views_dir):
        real = Path(os.path.realpath(other))
        if root == real or root in real.parents:
            raise UnsafeTarget(f"the compiled directory {root} contains {real}; refusing to modify it")
    if len(root.parts) < 3:
        raise UnsafeTarget(f"the compiled directory {root} is a top-level directory; refusing to modify it")
    return root


@dataclass(frozen=True, slots=True)
class PinnedDir:
    path: Path  # resolved
    dev: int
    ino: int


class CompiledRoots:
    """Each target's compiled directory as resolved when the heal started."""

    def __init__(self, targets: Iterable[LaravelTarget]) -> None:
        self._pinned: dict[str, PinnedDir | str] = {}
        for target in targets:
            try:
                root = check_compiled_dir(target)
                st = os.stat(root)
                self._pinned[target.name] = PinnedDir(root, st.st_dev, st.st_ino)
            except (UnsafeTarget, OSError) as exc:
                self._pinned[target.name] = str(exc)

    def open(self, target: LaravelTarget) -> PinnedDirectory:
        """The pinned directory, opened and verified to be that very inode (the caller closes it).

        Raises UnsafeTarget when it was refused at start, now resolves elsewhere or was replaced.
        """
        pinned = self._recheck(target)
        return PinnedDirectory(open_pinned(pinned, "compiled directory"), pinned.path,
                               lambda: self._verify(target, pinned))

    def _verify(self, target: LaravelTarget, pinned: PinnedDir) -> None:
        """The path checks of start again, and the path still leading to the pinned inode."""
        self._recheck(target)
        still_pinned(pinned, "compiled directory")

    def _recheck(self, target: LaravelTarget) -> PinnedDir:
        pinned = self._pinned.get(target.name)
        if pinned is None:
            raise UnsafeTarget(f"no compiled directory was resolved for {target.name!r} at start")
        if isinstance(pinned, str):
            raise UnsafeTarget(f"refused since start: {pinned}")
        now = check_compiled_dir(target)
        if now != pinned.path:
            raise UnsafeTarget(f"the compiled directory now resolves to {now}, not {pinned.path} as at "
                               "start; refusing to modify it")
        return pinned


def open_pinned(pinned: PinnedDir, what: str) -> int:
    """A descriptor of the pinned directory, reached one component at a time (exporter.fs.pinned) and
    verified to be that very inode; UnsafeTarget otherwise. The caller closes it."""
    try:
        fd = open_directory(pinned.path)
    except OSError as exc:
        raise UnsafeTarget(f"the {what} {pinned.path} cannot be opened safely: "
                           f"{exc.strerror or exc}") from None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (pinned.dev, pinned.ino):
        os.close(fd)
        raise _replaced(pinned, what)
    return fd


def still_pinned(pinned: PinnedDir, what: str) -> None:
    """UnsafeTarget unless the path still leads to the pinned inode (not following a final symlink)."""
    try:
        st = os.stat(pinned.path, follow_symlinks=False)
    except OSError as exc:
        raise UnsafeTarget(f"the {what} {pinned.path} is gone: {exc.strerror}") from None
    if (st.st_dev, st.st_ino) != (pinned.dev, pinned.ino):
        raise _replaced(pinned, what)


def verify_after(d: PinnedDirectory, outcome: ActionOutcome, what: str, dry_run: bool) -> None:
    """After changes made through `d`, record as an error if its directory moved or was replaced
    meanwhile: the changes were made in the pinned directory, wherever it now is."""
    if outcome.done and not dry_run:
        try:
            d.verify()
        except UnsafeTarget as exc:
            outcome.errors.append(f"after {what}: {exc}")


def _replaced(pinned: PinnedDir, what: str = "compiled directory") -> UnsafeTarget:
    return UnsafeTarget(f"the {what} {pinned.path} was replaced since start; refusing to modify it")


def name_in(root: Path, candidate: str) -> str | None:
    """The bare file name of `candidate` if it lies directly in `root` (after resolving its parent)."""
    p = Path(candidate)
    if not p.is_absolute() or p.name in ("", ".", ".."):
        return None
    if Path(os.path.realpath(p.parent)) != root:
        return None
    return p.name
