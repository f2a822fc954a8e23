"""The `/**PATH … ENDPATH**/` footer Laravel appends to every compiled view, and reading it cheaply.

Since Laravel 5.8.11 a compiled view ends with `<?php /**PATH /abs/source.blade.php ENDPATH**/ ?>`.
It names the source the view was compiled from, whatever the file-name hash scheme of the Laravel
version, so it is how a compiled file is mapped back to its source. Only the end of the file is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable

# Enough for the footer of any realistic path; a longer one is read again with LONG_TAIL_BYTES.
TAIL_BYTES = 512
LONG_TAIL_BYTES = 4096 + 64  # PATH_MAX plus the markers

_OPEN = b"/**PATH "
_CLOSE = b" ENDPATH**/"
_ENDING = _CLOSE + b" ?>"
_SLASH = ord("/")

TailReader = Callable[[str, int, int], bytes]


def read_tail(path: str, size: int, length: int) -> bytes:
    """The last `length` bytes of a file whose size was `size` when it was stat'ed."""
    # O_NOFOLLOW: a symlink planted in the compiled dir must not make the exporter read elsewhere.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        return os.pread(fd, length, max(0, size - length))
    finally:
        os.close(fd)


def parse_footer(tail: bytes) -> str | None:
    """The source path named by the footer ending `tail`, or None when the tail ends otherwise."""
    if tail.endswith(_ENDING):  # exactly as Laravel writes it: the common case, kept cheap
        end = len(tail) - len(_ENDING)
    else:
        end = tail.rfind(_CLOSE)
        if end < 0 or tail[end + len(_CLOSE):].strip() != b"?>":
            return None  # no footer at the very end: half-written, truncated, or not a compiled view
    start = tail.rfind(_OPEN, 0, end)
    if start < 0 or tail[start + len(_OPEN)] != _SLASH:
        return None
    return tail[start + len(_OPEN):end].decode("utf-8", "surrogateescape")  # as os.fsdecode does


def read_footer(path: str, size: int, reader: TailReader = read_tail) -> str | None:
    """The source path of the compiled view at `path`, or None if it has no readable footer.

    Raises OSError (FileNotFoundError when it vanished, PermissionError when it cannot be opened).
    """
    tail = reader(path, size, TAIL_BYTES)
    source = parse_footer(tail)
    if source is None and size > TAIL_BYTES and _CLOSE in tail and _OPEN not in tail:
        source = parse_footer(reader(path, size, LONG_TAIL_BYTES))  # a path longer than the tail
    return source
