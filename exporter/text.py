"""Text from outside (file names, paths PHP and FPM report, .env values, server strings) made safe to show.

A file name is bytes. Python hands over those that are not UTF-8 as lone surrogates (surrogateescape),
which every UTF-8 encoder refuses: one compiled view named `\\xff.php` made the status page answer 500
until it was removed, and `check` crash. A name may also hold a newline, which forges a log line, or
a terminal escape, which must not reach a terminal raw. So every place that shows such text goes
through one of two renderings, which escape an undecodable byte the same way (`\\xff`, as Python's
backslashreplace writes it), so that a name reads the same on the status page, in `check`, in the logs,
in JSON answers and in metric labels:

- `display` for people (the status page, `check`'s text, log lines, the heal command's text): every
  character that is not printable is escaped too (`\\n`, `\\x1b`, the bidirectional override `\\u202e`).
- `unicode_safe` and `json_safe` for machines (metric labels, JSON answers and audit lines): only
  what cannot be encoded is escaped; JSON and the exposition format escape control characters
  themselves, and a SQL statement's newlines stay newlines.

In JSON the string `\\xff.php` could be a name holding the byte 0xff or one holding a backslash, so
`json_safe` says which: valid UTF-8 stays as it is, and next to a value (or list of values) under key
K that holds undecodable bytes it adds `K_bytes_hex`, the exact bytes in lowercase hex (for a list: one
entry per element, null for those that are plain text). A reader that needs the bytes takes them from
there (`bytes.fromhex`); a string without such a sibling is exactly its text. (JSON's own `\\udcff`
escape would carry the byte too, but lone surrogates are refused by strict parsers such as serde_json.)
"""

from __future__ import annotations

import logging
import re
from typing import Any, TypeVar, cast

# Lone surrogates: U+DC80..U+DCFF stand for the undecodable bytes 0x80..0xFF; any other one cannot
# have come from surrogateescape and is shown as its code point.
_SURROGATE = re.compile("[\ud800-\udfff]")
T = TypeVar("T")

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _escape(char: str) -> str:
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else
                                f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def unicode_safe(text: str) -> str:
    """`text` with every undecodable byte written as `\\xNN`: encodable as UTF-8, whatever it held."""
    if text.isascii():
        return text
    return _SURROGATE.sub(_surrogate, text)


def display(value: object) -> str:
    """`value` as one printable line for people: undecodable bytes and control characters escaped."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    # Not printable, as Python judges it: controls, format marks such as the bidirectional overrides
    # that reorder text on screen, separators other than the space, unassigned code points.
    return "".join(c if c.isprintable() else _escape(c) for c in unicode_safe(text))


def json_safe(value: T) -> T:
    """`value` with every string in it (keys included) made `unicode_safe`, for json.dumps, and a
    `K_bytes_hex` sibling beside each value under key K that held undecodable bytes (see above).

    Tuples come back as lists, which JSON does not tell apart.
    """
    return cast(T, _json_safe(value))


def bytes_hex(text: str) -> str | None:
    """The bytes a file name decoded with surrogateescape stood for, in hex; None for plain text."""
    if text.isascii() or not _SURROGATE.search(text):
        return None
    try:
        return text.encode("utf-8", "surrogateescape").hex()
    except UnicodeEncodeError:  # a surrogate no byte stands for (e.g. from a JSON body): no bytes
        return None


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return unicode_safe(value)
    if isinstance(value, dict):
        out = {_json_safe(k): _json_safe(v) for k, v in value.items()}
        for k, v in value.items():
            if not isinstance(k, str):
                continue
            if isinstance(v, str) and (raw := bytes_hex(v)) is not None:
                out[f"{unicode_safe(k)}_bytes_hex"] = raw
            elif isinstance(v, list | tuple):
                raws = [bytes_hex(x) if isinstance(x, str) else None for x in v]
                if any(r is not None for r in raws):
                    out[f"{unicode_safe(k)}_bytes_hex"] = raws
        return out
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class OneLineMessages(logging.Filter):
    """Makes each log message one `display`ed line: a name with a newline cannot forge a log line.

    Tracebacks, when a record carries one, are left as they are.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = display(message)
        if shown != message:
            record.msg, record.args = shown, None
        return True
