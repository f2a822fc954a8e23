"""The code revision on disk, read by the sidecar without PHP.

A revision file is either plain text (a REVISION file: its first line) or a PHP file that returns the
version string. The sidecar image has no PHP, so the PHP form is parsed conservatively: only a literal
`return '...';` or `return "...";` (without interpolation) is understood; anything else is "unknown"
rather than a guess. The running revision comes from including the same file through FPM.
"""

from __future__ import annotations

import re
from pathlib import Path

UNKNOWN = "unknown"
_MAX_LABEL = 64
_RETURN_LITERAL = re.compile(r"""\breturn\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\$]|\\[^$])*)")\s*;""")
_PRINTABLE = re.compile(r"[^\x21-\x7e]+")


def as_label(value: str | None) -> str:
    """A revision fit for a label value: printable, no spaces, bounded length."""
    if not value:
        return UNKNOWN
    cleaned = _PRINTABLE.sub("_", value.strip())[:_MAX_LABEL]
    return cleaned or UNKNOWN


def parse_php_revision(source: str) -> str | None:
    m = _RETURN_LITERAL.search(source)
    if m is None:
        return None
    if m.group(1) is not None:
        return re.sub(r"\\([\\'])", r"\1", m.group(1))
    return m.group(2).replace('\\"', '"').replace("\\\\", "\\")


def read_disk_revision(path: Path) -> str | None:
    """The revision the file on disk names, or None if it cannot be read or understood."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if path.suffix == ".php":
        return parse_php_revision(text)
    first = text.strip().splitlines()
    return first[0].strip() if first else None
