"""Reading a Laravel app's `.env` file the way the app itself reads it.

python-dotenv's parser splits the file into bindings (comments, single/double quotes, escapes in double
quotes, `export`, multi-line quoted values); the rest follows Laravel (vlucas/phpdotenv and `env()`):
- `${VAR}` is replaced in unquoted and double-quoted values, never in single-quoted ones, and only by a
  variable defined on an earlier line of the same file; an unknown `${VAR}` stays as written;
- `null` and `(null)` mean unset, `empty` and `(empty)` mean the empty string (any case, quoted or not).
The sidecar's own environment is deliberately not consulted: it is not the app's environment, and a
sidecar variable must never silently redirect what the app's file says.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from dotenv.parser import Binding, parse_stream

log = logging.getLogger(__name__)

_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")
_UNSET = {"null", "(null)"}
_EMPTY = {"empty", "(empty)"}


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables a Laravel app at `path.parent` would see from its `.env`; {} when there is none.

    A variable Laravel reads as null (a bare key, `null`, `(null)`) is left out.
    """
    if not path.is_file():
        return {}
    try:
        with path.open(encoding="utf-8") as stream:
            bindings = list(parse_stream(stream))
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}
    values: dict[str, str] = {}
    for binding in bindings:
        if binding.key is None:
            continue  # a comment, a blank line or a line the parser could not read
        value = _resolve(binding, values)
        if value is None or value.lower() in _UNSET:
            values.pop(binding.key, None)
        else:
            values[binding.key] = "" if value.lower() in _EMPTY else value
    return values


def _resolve(binding: Binding, earlier: dict[str, str]) -> str | None:
    if binding.value is None or _quote_of(binding) == "'":
        return binding.value
    return _REFERENCE.sub(lambda m: earlier.get(m.group(1), m.group(0)), binding.value)


def _quote_of(binding: Binding) -> str:
    """The quote character that opens the binding's value in the file, or "" when it is unquoted."""
    _, _, after_equals = binding.original.string.partition("=")
    first = after_equals.lstrip()[:1]
    return first if first in ("'", '"') else ""
