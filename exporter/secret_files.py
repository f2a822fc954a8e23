"""Files secrets are read from, judged at start as ssh judges a private key file (`sshkey_perm_ok`).

A secret file that belongs to the user cachewarden runs as and grants group or others any access
refuses to start; so does one that group or others can write, whoever owns it (they could replace
the secret). A file owned by another user that everyone can read starts with a warning rather than
a refusal: that is how Kubernetes mounts a secret by default (root-owned, mode 0644, reached through
the `..data` symlink) and how Docker Swarm mounts one (0444), where no other user shares the
container; the warning names the fix. Symlinks are followed, as ssh does: the file the secret is
read from is the one that matters.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from exporter.config import Config


class SecretFileError(ValueError):
    """A secret file that must not be used; the message names the key, the file, its mode and the fix."""


def _who(mode: int, group_bits: int, other_bits: int) -> str:
    group, others = bool(mode & group_bits), bool(mode & other_bits)
    return "its group and others" if group and others else "its group" if group else "others"


def judge_secret_file(key: str, path: Path) -> str | None:
    """A warning for `path` (read by `key`) or None; SecretFileError when it must not be used."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SecretFileError(f"{key}: {path}: cannot read it ({exc.strerror})") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise SecretFileError(f"{key}: {path} can be written by {_who(mode, 0o020, 0o002)} "
                              f"(mode {mode:04o}), who could replace the secret; chmod go-w {path}")
    if st.st_uid == os.geteuid() and mode & 0o077:
        raise SecretFileError(f"{key}: {path} belongs to the user cachewarden runs as and can be read by "
                              f"{_who(mode, 0o070, 0o007)} (mode {mode:04o}); chmod 600 {path} "
                              "(ssh refuses a private key file like it)")
    if mode & 0o004:
        return (f"{key}: {path} can be read by every user on this host (mode {mode:04o}, owner uid "
                f"{st.st_uid}); make it 0400 or 0440 (Kubernetes: defaultMode 0440 and an fsGroup; "
                "Docker Swarm: mode 0400)")
    return None


def judge_secret_files(config: Config, *, except_keys: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Warnings about every secret file of `config`; SecretFileError for the first one refused."""
    warnings = (judge_secret_file(key, path) for key, path in config.secret_files() if key not in except_keys)
    return tuple(w for w in warnings if w)
