"""Path checks shared by the view actions: nothing outside the compiled directory, no symlink followed."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.config import LaravelTarget
from exporter.heal.actions.base import ActionError


class UnsafeTarget(ActionError):
    """The configured directories are not safe to modify (e.g. the compiled dir contains the app)."""


def compiled_root(target: LaravelTarget) -> Path:
    """The resolved compiled-view directory, refused when it would contain the app or its sources.

    A compiled_path of `..` or a symlink to `/` resolves to a directory holding far more than compiled
    views; acting inside it is refused outright rather than trusted to the per-file checks.
    """
    root = Path(os.path.realpath(target.compiled_dir))
    for other in (target.root, target.views_dir):
        real = Path(os.path.realpath(other))
        if root == real or root in real.parents:
            raise UnsafeTarget(f"the compiled directory {root} contains {real}; refusing to modify it")
    if len(root.parts) < 3:
        raise UnsafeTarget(f"the compiled directory {root} is a top-level directory; refusing to modify it")
    return root


def name_in(root: Path, candidate: str) -> str | None:
    """The bare file name of `candidate` if it lies directly in `root` (after resolving its parent)."""
    p = Path(candidate)
    if not p.is_absolute() or p.name in ("", ".", ".."):
        return None
    if Path(os.path.realpath(p.parent)) != root:
        return None
    return p.name
