"""`views.fix_permissions`: the compiled directory and its files to the configured owner and mode.

The directory gets `heal.views_mode` plus the execute bit wherever a read bit is set (0644 -> 0755).
Only files directly in it that are named like compiled views and have a single link are changed;
everything is done through descriptors opened with O_NOFOLLOW from the directory pinned at start (the
gate in exporter/heal/actions/safety.py), so a symlink, a hard link to a file elsewhere or a
subdirectory is reported and never followed out of it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat

from exporter.collectors.base import Observation
from exporter.fs.access import UserGroup
from exporter.fs.pinned import PinnedDirectory, is_single_regular_file
from exporter.heal.actions.base import Action, ActionOutcome
from exporter.heal.actions.safety import looks_compiled, verify_after


def dir_mode(file_mode: int) -> int:
    return file_mode | ((file_mode & 0o444) >> 2)


def owner_ids(owner: UserGroup | None) -> tuple[int, int]:
    """(uid, gid) for fchown; -1 leaves that id unchanged (a "user" alone keeps each file's group)."""
    if owner is None:
        return -1, -1
    return owner.uid, owner.gid if owner.group_given else -1


def _apply(fd: int, path: str, st: os.stat_result, mode: int, uid: int, gid: int,
           dry_run: bool, outcome: ActionOutcome) -> None:
    changes = []
    if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
        changes.append(("chown", f"{uid if uid != -1 else st.st_uid}:{gid if gid != -1 else st.st_gid}"))
    if stat.S_IMODE(st.st_mode) != mode:
        changes.append(("chmod", f"{mode:04o}"))
    for op, value in changes:
        if dry_run:
            outcome.done.append(f"would {op} {value} {path}")
            continue
        try:
            if op == "chown":
                os.fchown(fd, uid, gid)
            else:
                os.fchmod(fd, mode)
            outcome.done.append(f"{op} {value} {path}")
        except OSError as exc:
            outcome.errors.append(f"{op} {path}: {exc.strerror}")


def fix_tree(d: PinnedDirectory, file_mode: int, uid: int, gid: int, dry_run: bool) -> ActionOutcome:
    """Fix the pinned directory `d` and the compiled views directly in it."""
    outcome = ActionOutcome()
    # The directory first: an unreadable or unwritable directory is the usual cause.
    _apply(d.fd, str(d.path), d.stat(), dir_mode(file_mode), uid, gid, dry_run, outcome)
    for name in d.names():
        _fix_file(d, name, file_mode, uid, gid, dry_run, outcome)
    verify_after(d, outcome, "changing", dry_run)
    return outcome


def _fix_file(d: PinnedDirectory, name: str, file_mode: int, uid: int, gid: int, dry_run: bool,
              outcome: ActionOutcome) -> None:
    path = d.where(name)
    if not looks_compiled(name):
        # Laravel writes nothing else here; anything else was put here by someone, and is theirs.
        outcome.refused.append(f"{path}: not named like a compiled view")
        return
    try:
        # O_PATH cannot be fchmod'ed; O_RDONLY works for root even on a 0000 file. O_NOFOLLOW makes
        # a symlink fail here instead of being followed out of the directory.
        fd = d.open(name, os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            outcome.refused.append(f"{path}: a symlink, not followed")
        else:
            outcome.errors.append(f"{path}: {exc.strerror}")
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            outcome.refused.append(f"{path}: not a regular file")
        elif not is_single_regular_file(st):
            outcome.refused.append(f"{path}: has other hard links, left alone")
        else:
            _apply(fd, path, st, file_mode, uid, gid, dry_run, outcome)
    finally:
        os.close(fd)


class FixPermissions(Action):
    name = "views.fix_permissions"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        laravel = self.laravel(target)
        heal = self.ctx.config.heal
        uid, gid = owner_ids(heal.views_owner)

        def fix() -> ActionOutcome:
            with self.ctx.compiled.open(laravel) as d:
                return fix_tree(d, heal.views_mode, uid, gid, dry_run)

        return await asyncio.to_thread(fix)
