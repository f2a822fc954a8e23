"""The heal token, read and judged once at start, and the heal's state that `/`, `check` and GET /heal show.

A token file is judged as ssh judges a private key file (`sshkey_perm_ok`): when it belongs to the
user cachewarden runs as and grants group or others any access, start is refused; so is a file that
group or others can write, whoever owns it (they could choose the token). A file owned by another
user that everyone can read starts with a loud warning rather than a refusal: that is how Kubernetes
mounts a secret by default (root-owned, mode 0644, reached through the `..data` symlink) and how
Docker Swarm mounts one (0444), where no other user shares the container; the warning names the fix
(`defaultMode: 0440` with an `fsGroup`, or `mode: 0400`). Symlinks are followed, as ssh does, since
the file the token is read from is the one that matters.

A token that cannot work is refused, never turned into a silently disabled heal: an empty file or
variable, a token shorter than MIN_TOKEN_LENGTH, one with spaces or control characters (no
`Authorization` header can carry those; a CRLF file is fine, trailing line ends are dropped).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.config import MIN_TOKEN_LENGTH, HealConfig


class HealTokenError(ValueError):
    """The configured token cannot guard /heal; the message names the file or variable and the fix."""


@dataclass(frozen=True, slots=True)
class HealState:
    """Whether /heal acts, why, where its token came from, and what about it deserves a warning."""

    enabled: bool
    reason: str
    token_source: str | None  # "file /run/secrets/t" or "environment variable X"; never the token
    warnings: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "reason": self.reason, "token_source": self.token_source,
                "warnings": list(self.warnings)}

    @property
    def summary(self) -> str:
        return f"{'enabled' if self.enabled else 'disabled'}: {self.reason}"


def _who(mode: int, group_bits: int, other_bits: int) -> str:
    group, others = bool(mode & group_bits), bool(mode & other_bits)
    return "its group and others" if group and others else "its group" if group else "others"


def _file_mode_findings(path: Path) -> tuple[str | None, str | None]:
    """(why the file is refused, why it deserves a warning) from its mode and owner."""
    st = os.stat(path)  # follows symlinks: a Kubernetes secret is a symlink into ..data/
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return (f"heal.token_file: {path} can be written by {_who(mode, 0o020, 0o002)} (mode {mode:04o}), "
                f"who could choose the token; chmod go-w {path}"), None
    if st.st_uid == os.geteuid() and mode & 0o077:
        return (f"heal.token_file: {path} belongs to the user cachewarden runs as and can be read by "
                f"{_who(mode, 0o070, 0o007)} (mode {mode:04o}); chmod 600 {path} "
                "(ssh refuses a private key file like it)"), None
    if mode & 0o004:
        return None, (f"heal.token_file: {path} can be read by every user on this host (mode {mode:04o}, "
                      f"owner uid {st.st_uid}); make it 0400 or 0440 (Kubernetes: defaultMode 0440 and "
                      "an fsGroup; Docker Swarm: mode 0400)")
    return None, None


def _token_problem(token: str, source: str) -> str | None:
    if not token.strip():
        return f"{source} is empty: write the token into it, or remove the key to leave heal disabled"
    bad = next((i for i, ch in enumerate(token) if ch.isspace() or not ch.isprintable()), None)
    if bad is not None:
        return (f"{source}: the token has a space or control character at offset {bad}, which no "
                "Authorization header can carry")
    if len(token) < MIN_TOKEN_LENGTH:
        return f"{source}: the heal token must be at least {MIN_TOKEN_LENGTH} characters long"
    return None


def read_heal_state(heal: HealConfig) -> HealState:
    """Read the token and judge it; HealTokenError for a token or token file that must not be used."""
    warnings: tuple[str, ...] = ()
    token: str | None
    token_source: str | None
    if heal.token_file is not None:
        source = f"heal.token_file {heal.token_file}"
        refused, warning = _file_mode_findings(heal.token_file)
        if refused:
            raise HealTokenError(refused)
        warnings = (warning,) if warning else ()
        try:
            token = heal.token_file.read_bytes().decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise HealTokenError(f"{source}: not UTF-8 at byte offset {exc.start}") from None
        except OSError as exc:
            raise HealTokenError(f"{source}: cannot read it ({exc.strerror})") from None
        token_source = f"file {heal.token_file}"
    else:
        source = f"the variable {heal.token_env}"
        token = os.environ.get(heal.token_env)
        token_source = f"environment variable {heal.token_env}" if token is not None else None
    if token is not None and (problem := _token_problem(token, source)):
        raise HealTokenError(problem)
    if token is None:
        return HealState(False, f"no token: set heal.token_file or the variable {heal.token_env}", None)
    if not heal.enabled:
        return HealState(False, "heal.enabled is false", token_source, warnings, token)
    mode = "dry run: every run only lists what it would do" if heal.dry_run else "acts on firing alerts"
    return HealState(True, mode, token_source, warnings, token)
