"""Log lines a stranger can trigger, at most one per kind and interval, each one line without traceback.

Anybody who can reach the port can make cachewarden refuse a request; a log line per refusal would let
them fill the disk and bury the lines that matter. The standard library has no rate-limited logging
and the small token counters below are all it takes, so no library is pulled in for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

DEFAULT_INTERVAL = 10.0  # seconds between two lines of the same kind


class RateLimitedLog:
    """`warning(kind, msg, *args)` logs at most once per `interval` seconds per `kind`.

    The first line of a kind is logged at once; lines within the interval are counted, and the next
    line logged says how many were left out. Arguments are formatted by `logging` as usual: never pass
    a request's header, body or query, only values cachewarden decided (an address, a class name).
    """

    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def admit(self, kind: str) -> int | None:
        """None when a line of `kind` was let through within the interval (this one is counted as left
        out); otherwise how many were left out since the last line of `kind`."""
        now = self._clock()
        if now < self._next.get(kind, float("-inf")):
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return None
        self._next[kind] = now + self._interval
        return self._left_out.pop(kind, 0)

    @property
    def interval(self) -> float:
        return self._interval

    def log(self, level: int, kind: str, msg: str, *args: object) -> bool:
        """Log unless a line of `kind` was logged within the interval; True if this one was logged."""
        left_out = self.admit(kind)
        if left_out is None:
            return False
        if left_out:
            msg += " (and %d more like it in the last %gs)"
            args = (*args, left_out, self._interval)
        self._logger.log(level, msg, *args)
        return True

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)

    def error(self, kind: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, kind, msg, *args)
