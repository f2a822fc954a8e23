"""The heal token, read and judged once at start, and the heal's state that `/`, `check` and GET /heal show.

The token file's mode and owner are judged as every secret file's are (exporter.secret_files, as ssh
judges a key file): refused, or started with a warning the state carries.

A token that cannot work is refused, never turned into a silently disabled heal: an empty file or
variable, a token shorter than MIN_TOKEN_LENGTH, one with spaces or control characters (no
`Authorization` header can carry those; a CRLF file is fine, trailing line ends are dropped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from exporter.config import MIN_TOKEN_LENGTH, HealConfig
from exporter.secret_files import SecretFileError, judge_secret_file


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

    def __post_init__(self) -> None:
        # However the state is built (read_heal_state, or create_app's caller), the token's rules hold.
        if self.token is not None and (problem := _token_problem(self.token, "the heal token")):
            raise HealTokenError(problem)

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "reason": self.reason, "token_source": self.token_source,
                "warnings": list(self.warnings)}

    @property
    def summary(self) -> str:
        return f"{'enabled' if self.enabled else 'disabled'}: {self.reason}"


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
        try:
            warning = judge_secret_file("heal.token_file", heal.token_file)
        except SecretFileError as exc:
            raise HealTokenError(str(exc)) from None
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
