"""`views.remove_orphans`: delete compiled views whose source is gone, and nothing else.

Each candidate is re-checked right before it is unlinked, relative to a descriptor of the compiled
directory pinned at start (the gate in exporter/heal/actions/safety.py): it must be a regular file
with one link, named like a compiled view, directly in that directory (a symlink is never followed
nor removed), its footer must name a source, and that source must still be missing.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Sequence

from exporter.collectors.base import Observation
from exporter.fs.footer import LONG_TAIL_BYTES, parse_footer
from exporter.fs.pinned import PinnedDirectory, is_single_regular_file
from exporter.heal.actions.base import Action, ActionOutcome
from exporter.heal.actions.findings import view_findings
from exporter.heal.actions.safety import looks_compiled, name_in, verify_after


def _why_not(d: PinnedDirectory, name: str) -> str | None:
    """None when `name` is still an orphaned compiled view, else the reason to leave it alone."""
    try:
        st = d.lstat(name)
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
        source = parse_footer(d.read_tail(name, st.st_size, LONG_TAIL_BYTES))
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if source is None:
        return "no footer naming its source"
    if os.path.lexists(source):
        return "its source exists"
    return None


def remove_orphans(d: PinnedDirectory, candidates: Sequence[str], dry_run: bool) -> ActionOutcome:
    """Remove the candidates still orphaned, through the pinned directory `d`."""
    outcome = ActionOutcome()
    for candidate in candidates:
        name = name_in(d.path, candidate)
        if name is None:
            outcome.refused.append(f"{candidate}: outside the compiled directory")
            continue
        reason = _why_not(d, name)
        if reason is not None:
            outcome.refused.append(f"{candidate}: {reason}")
            continue
        path = d.where(name)
        if dry_run:
            outcome.done.append(f"would delete {path}")
            continue
        try:
            d.unlink(name)
            outcome.done.append(f"deleted {path}")
        except FileNotFoundError:
            outcome.refused.append(f"{path}: already gone")
        except OSError as exc:
            outcome.errors.append(f"{path}: {exc.strerror}")
    verify_after(d, outcome, "deleting", dry_run)
    return outcome


class RemoveOrphans(Action):
    name = "views.remove_orphans"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        laravel = self.laravel(target)
        candidates = view_findings(observation).orphaned

        def remove() -> ActionOutcome:
            with self.ctx.compiled.open(laravel) as d:
                return remove_orphans(d, candidates, dry_run)

        return await asyncio.to_thread(remove)
