"""What a process the heal starts inherits: none of cachewarden's secrets, the account it is told
to run as, and the descriptor limit cachewarden itself was started with (serve raises its own).

Warm commands and the PHP CLI run the app's own code, which needs neither the heal token nor a
database password from cachewarden's environment. An artisan command run as root leaves root-owned
caches behind that the app's own user cannot rewrite, so a warm command may name the account to run as.
"""

from __future__ import annotations

import os
from typing import Any

from exporter.config import Config
from exporter.descriptors import child_limits, restore_for_child
from exporter.fs.access import UserGroup


class AccountError(Exception):
    """cachewarden may not switch to the account a command is to run as."""


def environment(config: Config) -> dict[str, str]:
    """cachewarden's environment minus the variables its secrets are read from."""
    secret = config.secret_variables()
    return {name: value for name, value in os.environ.items() if name not in secret}


def spawn_options(config: Config, account: UserGroup | None = None) -> dict[str, Any]:
    """Keyword arguments for asyncio.create_subprocess_exec: the scrubbed environment and, when
    `account` (resolved at load) is another one than cachewarden's, that user, group and home.
    Raises AccountError when it is another one and cachewarden may not switch to it."""
    env = environment(config)
    # serve raised its soft RLIMIT_NOFILE (exporter.descriptors); PHP and artisan get the original.
    limits: dict[str, Any] = {"preexec_fn": restore_for_child} if child_limits() is not None else {}
    if account is None or (account.uid, account.gid) == (os.geteuid(), os.getegid()):
        return {"env": env, **limits}
    if os.geteuid() != 0:
        raise AccountError(f"cannot run as {account}: only root may switch users, cachewarden runs as "
                           f"uid {os.geteuid()}")
    name = account.name or str(account.uid)
    env.update(HOME=account.home or "/", USER=name, LOGNAME=name)
    # extra_groups=[]: root's supplementary groups must not come along.
    return {"env": env, "user": account.uid, "group": account.gid, "extra_groups": [], **limits}
