"""Reading a Laravel app's `.env` file.

python-dotenv does the parsing (comments, single/double quotes, `export`, `${VAR}` references resolved
against the file's earlier lines). The sidecar's own environment is deliberately not merged in: it is not
the app's environment, and a sidecar variable must never silently redirect what the app's file says.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dotenv import dotenv_values

log = logging.getLogger(__name__)


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables a Laravel app at `path.parent` would see from its `.env`; {} when there is none."""
    if not path.is_file():
        return {}
    try:
        raw = dotenv_values(path, interpolate=True, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}
    # A key without a value (`FOO` alone on a line) parses to None; Laravel treats it as unset.
    return {k: v for k, v in raw.items() if v is not None}
