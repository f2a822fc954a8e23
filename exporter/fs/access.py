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
class UserGroup:
    """An account given as "user" or "user:group", names or numeric ids ("33:33", as containers often
    write it), resolved once against this host's passwd and group databases.

    A name must exist; a numeric id needs no entry (a container's user may have none), but a user id
    with no entry must name its group. Without a group, the user's login group is meant.
    """

    spec: str  # as configured
    uid: int
    gid: int  # the group to run as: the given one, else the user's login group
    group_given: bool  # False: "user" alone (a chown leaves the group as it is)
    gids: frozenset[int]  # gid plus the user's supplementary groups: what access is judged for
    name: str | None  # the passwd name, None for an id with no entry
    home: str | None

    def __str__(self) -> str:
        return self.spec

    @classmethod
    def parse(cls, spec: str) -> UserGroup:
        """Raises ValueError naming what is wrong (the form, an unknown user or group)."""
        user, sep, group = spec.partition(":")
        if not user or (sep and not group) or ":" in group:
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
        return cls(spec, uid, gid, bool(group), frozenset(gids), entry.pw_name if entry else None,
                   entry.pw_dir if entry else None)


def _uid(user: str) -> tuple[int, pwd.struct_passwd | None]:
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
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


def can_create_files(st: os.stat_result, who: UserGroup) -> bool:
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
