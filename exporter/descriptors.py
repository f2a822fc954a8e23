"""The descriptor budget of `serve`: what the configured collectors need, and the soft RLIMIT_NOFILE.

Every collection, HTTP connection and heal run holds file descriptors, and RLIMIT_NOFILE caps them
all together. Under `ulimit -n 24` a flood of slow HTTP clients took every descriptor the views walk
and the scrapes needed, with nothing said at start. So at start `serve`:

- raises its soft limit to the hard limit (at most NOFILE_TARGET), as Go's runtime does since 1.19:
  the soft limit only exists to protect programs that use select(), which cachewarden does not
  (asyncio uses epoll). The processes the heal starts get the original soft limit back
  (`restore_for_child`, in exporter.heal.child_process), as PHP or an artisan command may use select();
- counts what it needs: the descriptors open already, the event loop's own, each collector's at its
  busiest (DESCRIPTORS_PER_COLLECTOR, summed, as collectors run side by side) and the heal's, plus the
  least the HTTP server can work with (exporter.serving.MIN_SERVING);
- refuses to start (exit 2) when the table cannot hold that, naming `ulimit -n` and systemd's
  `LimitNOFILE=`, and warns when it holds it with little room for HTTP connections.
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

NOFILE_TARGET = 1 << 16  # the soft limit asked for when the hard one allows (systemd: hard 512 Ki)
LOOP_DESCRIPTORS = 3  # the event loop's epoll instance and its self-pipe, opened after the count is taken

# Descriptors one collector of each kind holds at once, at most. views: the compiled directory, its
# scandir, one compiled file and the views directory walk; fpm: its FastCGI socket and the pool file;
# opcache: the FastCGI socket, the agent script written, the pool file and the file-cache walk;
# redis: its one pooled connection; sql: pool_size 1 + max_overflow 1; app_stats: a keep-alive
# connection and a new one while it is replaced; discovery: the .env file; laravel_caches: the walk
# of the caches' inputs and PHP's inspection (a FastCGI socket and its script, or a php child's pipes).
DESCRIPTORS_PER_COLLECTOR = {"views": 4, "fpm": 2, "opcache": 4, "redis": 1, "sql": 2, "app_stats": 2,
                             "discovery": 1, "laravel_caches": 4}
UNKNOWN_KIND = 4
# A heal run: a child's three pipes, the pinned directories of an action and a FastCGI socket.
HEAL_RUN_DESCRIPTORS = 8


@dataclass(frozen=True, slots=True)
class Budget:
    """What `serve` needs besides its HTTP connections, and how it adds up (for messages)."""

    open_now: int  # descriptors open when counted, plus the event loop's
    collectors: int  # every collector at its busiest
    heal: int
    parts: tuple[str, ...]  # "views 4 x 2", ... for the messages

    @property
    def reserved(self) -> int:
        return self.open_now + self.collectors + self.heal

    def explain(self) -> str:
        listed = ", ".join(self.parts) if self.parts else "none"
        return (f"{self.open_now} open at start, {self.collectors} for the collectors ({listed})"
                + (f", {self.heal} for the heal" if self.heal else ""))


def open_descriptors() -> int:
    """How many descriptors this process holds now (/proc/self/fd, less the one listing it)."""
    try:
        return max(0, len(os.listdir("/proc/self/fd")) - 1)
    except OSError:  # no /proc: count the low numbers that are open
        return sum(1 for fd in range(256) if _is_open(fd))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def budget(kinds: Iterable[str], *, heal_store_connections: int | None, open_now: int | None = None
           ) -> Budget:
    """The descriptors needed by collectors of `kinds` (one entry per collector) and the heal (None:
    heal off; else the connections its Redis store may hold, 0 without one)."""
    counts = Counter(kinds)
    parts = []
    collectors = 0
    for kind, n in sorted(counts.items()):
        each = DESCRIPTORS_PER_COLLECTOR.get(kind, UNKNOWN_KIND)
        collectors += each * n
        parts.append(f"{kind} {each} x {n}")
    heal = 0 if heal_store_connections is None else HEAL_RUN_DESCRIPTORS + heal_store_connections
    held = open_descriptors() if open_now is None else open_now
    return Budget(held + LOOP_DESCRIPTORS, collectors, heal, tuple(parts))


_original: tuple[int, int] | None = None  # the limits before raise_soft_limit, for children


def raise_soft_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE toward the hard one (at most NOFILE_TARGET); the (old, new) soft
    limits. A limit that cannot be raised is left as it is."""
    global _original
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_TARGET if hard == resource.RLIM_INFINITY else min(hard, NOFILE_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft, soft
        if _original is None:
            _original = (soft, hard)
        return soft, target
    return soft, soft


def child_limits() -> tuple[int, int] | None:
    """The limits a child process should start with, when raise_soft_limit changed this process's."""
    return _original


def restore_for_child() -> None:
    """A preexec function: the child gets the soft limit cachewarden was started with.

    Only setrlimit runs here, between fork and exec: no lock is taken, no Python object allocated
    beyond the call itself.
    """
    if _original is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, _original)
