"""What a process the heal starts inherits: none of cachewarden's secrets, the account it is told
to run as, and the descriptor limit cachewarden itself was started with (serve raises its own).

Warm commands and the PHP CLI run the app's own code, which needs neither the heal token nor a
database password from cachewarden's environment. An artisan command run as root leaves root-owned
caches behind that the app's own user cannot rewrite, so a warm command may name the account to run as.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import Any

from exporter.config import Config
from exporter.descriptors import child_limits, restore_for_child


class AccountError(Exception):
    """`user[:group]` names no account on this host, or cachewarden may not switch to it."""


def environment(config: Config) -> dict[str, str]:
    """cachewarden's environment minus the variables its secrets are read from."""
    secret = config.secret_variables()
    return {name: value for name, value in os.environ.items() if name not in secret}


def spawn_options(config: Config, account: str | None = None) -> dict[str, Any]:
    """Keyword arguments for asyncio.create_subprocess_exec: the scrubbed environment and, when
    `account` ("user" or "user:group", the group defaulting to the user's own) is another one than
    cachewarden's, that user, group and home. Raises AccountError."""
    env = environment(config)
    # serve raised its soft RLIMIT_NOFILE (exporter.descriptors); PHP and artisan get the original.
    limits: dict[str, Any] = {"preexec_fn": restore_for_child} if child_limits() is not None else {}
    if account is None:
        return {"env": env, **limits}
    user, _, group = account.partition(":")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise AccountError(f"no user named {user!r}") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    except KeyError:
        raise AccountError(f"no group named {group!r}") from None
    if (entry.pw_uid, gid) == (os.geteuid(), os.getegid()):
        return {"env": env, **limits}
    if os.geteuid() != 0:
        raise AccountError(f"cannot run as {account}: only root may switch users, cachewarden runs as "
                           f"uid {os.geteuid()}")
    env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
    # extra_groups=[]: root's supplementary groups must not come along.
    return {"env": env, "user": entry.pw_uid, "group": gid, "extra_groups": [], **limits}
