"""`views.fix_permissions`: the compiled directory and its files to the configured owner and mode.

Directories get `heal.views_mode` plus the execute bit wherever a read bit is set (0644 -> 0755).
Everything is done through descriptors opened with O_NOFOLLOW, so a symlink in the directory is
reported and never followed out of it.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import stat
from pathlib import Path

from exporter.collectors.base import Observation
from exporter.heal.actions.base import Action, ActionError, ActionOutcome
from exporter.heal.actions.safety import compiled_root

MAX_DEPTH = 4


def dir_mode(file_mode: int) -> int:
    return file_mode | ((file_mode & 0o444) >> 2)


def resolve_owner(spec: str | None) -> tuple[int, int]:
    """(uid, gid) for "user[:group]"; -1 leaves that id unchanged (os.fchown's convention)."""
    if not spec:
        return -1, -1
    user, _, group = spec.partition(":")
    try:
        uid = pwd.getpwnam(user).pw_uid
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError as exc:
        raise ActionError(f"heal.views_owner: unknown user or group {exc.args[0]!r}") from None
    return uid, gid


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


def fix_tree(root: Path, file_mode: int, uid: int, gid: int, dry_run: bool) -> ActionOutcome:
    outcome = ActionOutcome()
    _fix_dir(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), str(root),
             file_mode, uid, gid, dry_run, outcome, 0)
    return outcome


def _fix_dir(dir_fd: int, path: str, file_mode: int, uid: int, gid: int, dry_run: bool,
             outcome: ActionOutcome, depth: int) -> None:
    try:
        # The directory first: an unreadable or unwritable directory is the usual cause.
        _apply(dir_fd, path, os.fstat(dir_fd), dir_mode(file_mode), uid, gid, dry_run, outcome)
        for name in os.listdir(dir_fd):
            child = f"{path}/{name}"
            try:
                st = os.lstat(name, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                outcome.refused.append(f"{child}: a symlink, not followed")
            elif stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                sub = os.open(name, flags, dir_fd=dir_fd)
                _fix_dir(sub, child, file_mode, uid, gid, dry_run, outcome, depth + 1)
            elif stat.S_ISREG(st.st_mode):
                try:
                    # O_PATH cannot be fchmod'ed; O_RDONLY works for root even on a 0000 file.
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                 dir_fd=dir_fd)
                except OSError as exc:
                    outcome.errors.append(f"{child}: {exc.strerror}")
                    continue
                try:
                    _apply(fd, child, os.fstat(fd), file_mode, uid, gid, dry_run, outcome)
                finally:
                    os.close(fd)
            else:
                outcome.refused.append(f"{child}: not a regular file")
    finally:
        os.close(dir_fd)


class FixPermissions(Action):
    name = "views.fix_permissions"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        root = compiled_root(self.laravel(target))
        heal = self.ctx.config.heal
        uid, gid = resolve_owner(heal.views_owner)
        return await asyncio.to_thread(fix_tree, root, heal.views_mode, uid, gid, dry_run)
