"""Walking an app's Blade sources: every `*.blade.php` under the views directory, recursively."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator

BLADE_SUFFIX = ".blade.php"
NS_PER_S = 1_000_000_000
# How many directory entries pass between two looks at the cancel flag.
CANCEL_CHECK_EVERY = 1024


class ScanCancelled(Exception):
    """The scan was asked to stop (its collection timed out); its partial results are dropped."""


def iter_sources(root: str, cancelled: threading.Event, unreadable: list[str]) -> Iterator[tuple[str, int]]:
    """Yield (path relative to `root`, mtime in whole seconds) for every Blade source under `root`.

    Seconds, because Laravel compares `filemtime()` values. Symlinked directories are followed, as
    Laravel's view finder follows them, once each. Entries that vanish during the walk are skipped;
    directories that cannot be listed are appended to `unreadable`. `root` itself must be listable.
    """
    top = os.stat(root)
    seen_dirs = {(top.st_dev, top.st_ino)}
    pending = [(root, "")]
    seen = 0
    first = True
    while pending:
        directory, prefix = pending.pop()
        try:
            listing = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            if first:
                raise
            continue  # removed while we walked
        except PermissionError:
            if first:
                raise
            unreadable.append(directory)
            continue
        first = False
        with listing:
            for entry in listing:
                seen += 1
                if not seen % CANCEL_CHECK_EVERY and cancelled.is_set():
                    raise ScanCancelled
                name = entry.name
                try:
                    if name.endswith(BLADE_SUFFIX):
                        st = entry.stat()
                        if stat.S_ISREG(st.st_mode):
                            yield prefix + name, st.st_mtime_ns // NS_PER_S
                        continue
                    if entry.is_dir():
                        st = entry.stat()
                        if (st.st_dev, st.st_ino) not in seen_dirs:
                            seen_dirs.add((st.st_dev, st.st_ino))
                            pending.append((entry.path, prefix + name + "/"))
                except FileNotFoundError:
                    continue  # vanished between the listing and the stat, or a dangling symlink
