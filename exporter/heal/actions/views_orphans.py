"""`views.remove_orphans`: delete compiled views whose source is gone, and nothing else.

Each candidate is re-checked right before it is unlinked, relative to a descriptor of the compiled
directory pinned at start (exporter/heal/actions/safety.py): it must be a regular file with one link,
named like a compiled view, directly in that directory (a symlink is never followed nor removed), its
footer must name a source, and that source must still be missing.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from exporter.collectors.base import Observation
from exporter.fs.footer import parse_footer
from exporter.heal.actions.base import Action, ActionOutcome
from exporter.heal.actions.findings import view_findings
from exporter.heal.actions.safety import is_single_regular_file, looks_compiled, name_in

TAIL = 4096 + 64


def _footer_source(dir_fd: int, name: str) -> str | None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        size = os.fstat(fd).st_size
        return parse_footer(os.pread(fd, TAIL, max(0, size - TAIL)))
    finally:
        os.close(fd)


def _why_not(dir_fd: int, name: str) -> str | None:
    """None when `name` is still an orphaned compiled view, else the reason to leave it alone."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return "already gone"
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not is_single_regular_file(st):
        return "has other hard links"
    if not looks_compiled(name):
        return "not named like a compiled view"
    try:
        source = _footer_source(dir_fd, name)
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if source is None:
        return "no footer naming its source"
    if os.path.lexists(source):
        return "its source exists"
    return None


def remove_orphans(dir_fd: int, root: Path, candidates: list[str], dry_run: bool) -> ActionOutcome:
    """Remove the candidates still orphaned, through `dir_fd` (a descriptor of `root`, closed here)."""
    outcome = ActionOutcome()
    try:
        for candidate in candidates:
            name = name_in(root, candidate)
            if name is None:
                outcome.refused.append(f"{candidate}: outside the compiled directory")
                continue
            reason = _why_not(dir_fd, name)
            if reason is not None:
                outcome.refused.append(f"{candidate}: {reason}")
                continue
            path = f"{root}/{name}"
            if dry_run:
                outcome.done.append(f"would delete {path}")
                continue
            try:
                os.unlink(name, dir_fd=dir_fd)
                outcome.done.append(f"deleted {path}")
            except FileNotFoundError:
                outcome.refused.append(f"{path}: already gone")
            except OSError as exc:
                outcome.errors.append(f"{path}: {exc.strerror}")
    finally:
        os.close(dir_fd)
    return outcome


class RemoveOrphans(Action):
    name = "views.remove_orphans"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        laravel = self.laravel(target)
        candidates = view_findings(observation).orphaned

        def remove() -> ActionOutcome:
            dir_fd, root = self.ctx.compiled.open(laravel)
            return remove_orphans(dir_fd, root, candidates, dry_run)

        return await asyncio.to_thread(remove)
