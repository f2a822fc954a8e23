"""Whether PHP's user can create files in a directory, judged from the directory's owner, group and mode.

cachewarden rarely runs as the user PHP-FPM runs as: as root `os.access` says yes to everything, as its
own user it says no where www-data can write. With `php_user` configured, the answer is computed for
that user the way the kernel decides it from the mode bits (owner class, else group class for the
primary or a supplementary group, else other), as FPM's workers get their groups (`initgroups` with
the pool's group). POSIX ACLs are not read; a read-only mount is caught by the caller's statvfs.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PhpUser:
    """A user (and its groups) that directory access is judged for."""

    name: str  # as configured: "www-data", "www-data:www-data", "33:33"
    uid: int
    gids: frozenset[int]


def _uid(user: str) -> tuple[int, pwd.struct_passwd | None]:
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if user.isdigit():
            return int(user), None  # a numeric id needs no passwd entry, as in containers
        raise ValueError(f"no such user: {user!r}") from None
    return entry.pw_uid, entry


def _gid(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group: {group!r}") from None


def resolve_php_user(spec: str) -> PhpUser:
    """Resolve "user" or "user:group" (names or numeric ids). Raises ValueError naming what is wrong."""
    user, _, group = spec.partition(":")
    if not user or (":" in spec and not group):
        raise ValueError(f"not 'user' or 'user:group': {spec!r}")
    uid, entry = _uid(user)
    if group:
        gid = _gid(group)
    elif entry is not None:
        gid = entry.pw_gid
    else:
        raise ValueError(f"user id {uid} has no passwd entry: name its group as '{uid}:GROUP'")
    gids = {gid}
    if entry is not None:
        gids.update(g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem)
    return PhpUser(spec, uid, frozenset(gids))


def can_create_files(st: os.stat_result, who: PhpUser) -> bool:
    """True if `who` may create files in the directory `st` describes (write and search bits)."""
    if who.uid == 0:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == who.uid:
        needed = stat.S_IWUSR | stat.S_IXUSR
    elif st.st_gid in who.gids:
        needed = stat.S_IWGRP | stat.S_IXGRP
    else:
        needed = stat.S_IWOTH | stat.S_IXOTH
    return mode & needed == needed
