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

FOOTER_OPENING = b"/**PATH "
_CLOSE = b" ENDPATH**/"
FOOTER_ENDING = _CLOSE + b" ?>"  # exactly as Laravel writes it
_SLASH = ord("/")
# O_NOFOLLOW: a symlink planted in the compiled dir must not make the exporter read elsewhere.
READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW

TailReader = Callable[[str, int, int], bytes]


def read_tail(path: str, size: int, length: int) -> bytes:
    """The last `length` bytes of a file whose size was `size` when it was stat'ed."""
    fd = os.open(path, READ_FLAGS)
    try:
        return os.pread(fd, length, max(0, size - length))
    finally:
        os.close(fd)


def parse_footer(tail: bytes) -> str | None:
    """The source path named by the footer ending `tail`, or None when the tail ends otherwise."""
    if tail.endswith(FOOTER_ENDING):  # exactly as Laravel writes it: the common case, kept cheap
        end = len(tail) - len(FOOTER_ENDING)
    else:
        end = tail.rfind(_CLOSE)
        if end < 0 or tail[end + len(_CLOSE):].strip() != b"?>":
            return None  # no footer at the very end: half-written, truncated, or not a compiled view
    start = tail.rfind(FOOTER_OPENING, 0, end)
    if start < 0 or tail[start + len(FOOTER_OPENING)] != _SLASH:
        return None
    return tail[start + len(FOOTER_OPENING):end].decode("utf-8", "surrogateescape")  # as os.fsdecode does


def read_footer(path: str, size: int, reader: TailReader = read_tail) -> str | None:
    """The source path of the compiled view at `path`, or None if it has no readable footer.

    Raises OSError (FileNotFoundError when it vanished, PermissionError when it cannot be opened).
    """
    return footer_in(reader(path, size, TAIL_BYTES), path, size, reader)


def footer_in(tail: bytes, path: str, size: int, reader: TailReader = read_tail) -> str | None:
    """The source path named by the footer in `tail`, the last TAIL_BYTES of the file at `path`.

    A path longer than the tail is read again with a longer one (may raise OSError as read_footer)."""
    source = parse_footer(tail)
    if source is None and size > TAIL_BYTES and _CLOSE in tail and FOOTER_OPENING not in tail:
        source = parse_footer(reader(path, size, LONG_TAIL_BYTES))
    return source
