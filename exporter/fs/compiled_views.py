"""Incremental scan of a Laravel app's compiled views against its Blade sources.

Each compiled file is mapped to its source by its footer (`exporter.fs.footer`), never by recomputing
Laravel's file-name hash, which changed across versions and with every symlinked release directory.
A footer is read again only when the file's (inode, size, mtime_ns) changed, so a rescan of an
unchanged tree costs one stat per file, like `find`.

What is counted, by Laravel's own rules (`Compiler::isExpired`, 8.x-10.x):
- stale: the source's `filemtime` (whole seconds) is >= the compiled file's; Laravel recompiles it on
  the next request, racing any concurrent request that includes it.
- orphaned: the footer names a source that no longer exists (Laravel 8-10 answer 500 for it).
- external: the footer names an existing file outside this app's views directory: a package view, or
  a release directory that `current` no longer points to. It is not one of this app's sources, but
  Laravel would check it against that very file, so it is checked for staleness the same way.
- uncompiled: a source under the views directory that no compiled footer names.
- footerless: a `*.php` file with no footer at its end (half-written, truncated or foreign).

Sources are matched by realpath: the views directory is resolved once per scan, as Laravel's default
`config/view.php` resolves it, and footers naming a path through a symlink are resolved when read.

Memory is kept flat for 100,000 files: the per-file cache is one int per inode, and each source path
is stored once, relative to the views directory, in a table the cache refers to by index.
"""

from __future__ import annotations

import os
import stat
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.fs.footer import TailReader, read_footer, read_tail
from exporter.fs.view_sources import CANCEL_CHECK_EVERY, NS_PER_S, ScanCancelled, iter_sources

# Cache value layout: signature (mtime_ns << 40 | size) << 32 | source id.
_SIZE_MASK = (1 << 40) - 1
_ID_MASK = (1 << 32) - 1
NO_SOURCE = _ID_MASK  # the source id recorded for a file without a readable footer

# Per-scan state of a source id.
_WALKED = 1  # found by the walk of the views directory
_COMPILED = 2  # named by at least one compiled file
_RESOLVED = 4  # existence and mtime known for this scan
_MISSING = 8
_EXTERNAL = 16

# Compact the source table once it holds this many more paths than are still in use.
_TABLE_SLACK = 4096


@dataclass(frozen=True, slots=True)
class StaleView:
    compiled: str
    source: str
    source_mtime: int  # whole seconds, as Laravel compares them


@dataclass(slots=True)
class ViewScan:
    """One complete scan. Paths are absolute; counts are complete, lists are not capped."""

    views_dir: str  # the realpath the sources were matched against
    compiled_dir: str
    dir_exists: bool = False
    dir_writable: bool = False
    free_bytes: int | None = None  # None when the directory does not exist
    sources: int = 0
    compiled: int = 0
    external: int = 0
    stale: list[StaleView] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    uncompiled: list[str] = field(default_factory=list)
    footerless: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    foreign_owned: list[str] = field(default_factory=list)
    footer_reads: int = 0


class CompiledViewScanner:
    """Scans one app's compiled-view directory; keeps what it learnt between scans.

    `scan` is blocking and meant for a worker thread; two scans never run at once.
    """

    def __init__(self, views_dir: str | os.PathLike[str], compiled_dir: str | os.PathLike[str], *,
                 reader: TailReader = read_tail) -> None:
        self._views_dir = os.fspath(views_dir)
        self._compiled_dir = os.fspath(compiled_dir)
        self._reader = reader
        self._lock = threading.Lock()
        self._root: str | None = None  # the resolved views dir the cache and table were built against
        self._cache: dict[int, int] = {}  # inode -> packed value, see the layout above
        self._ids: dict[str, int] = {}  # source key -> id; keys are relative to the root, or absolute
        self._keys: list[str] = []
        self.footer_reads = 0  # footers read since creation: how well the incremental scan works

    def scan(self, cancelled: threading.Event | None = None) -> ViewScan:
        """Scan now. Raises ScanCancelled soon after `cancelled` is set; OSError if the views dir
        cannot be listed."""
        with self._lock:
            return self._scan(cancelled or threading.Event())

    def _reset_if_moved(self, root: str) -> None:
        # A release switch changes the root: relative keys read against the old root would match the
        # new release's files, so everything learnt before is dropped.
        if root != self._root:
            self._root = root
            self._cache, self._ids, self._keys = {}, {}, []

    def _scan(self, cancelled: threading.Event) -> ViewScan:
        root = os.path.realpath(self._views_dir)
        self._reset_if_moved(root)
        prefix = root.rstrip(os.sep) + os.sep
        result = ViewScan(views_dir=root, compiled_dir=self._compiled_dir)
        ids, keys = self._ids, self._keys
        state = bytearray(len(keys))
        mtimes = array("q", bytes(8 * len(keys)))

        def intern(key: str) -> int:
            sid = ids.get(key)
            if sid is None:
                sid = ids[key] = len(keys)
                keys.append(key)
                state.append(0)
                mtimes.append(0)
            return sid

        sources = 0
        for rel, mtime in iter_sources(root, cancelled, result.unreadable):
            sid = ids.get(rel)
            if sid is None:
                sid = intern(rel)
            state[sid] = _WALKED | _RESOLVED
            mtimes[sid] = mtime
            sources += 1
        result.sources = sources

        compiled_dir = self._compiled_dir
        try:
            dir_stat = os.stat(compiled_dir)
        except (FileNotFoundError, NotADirectoryError):
            dir_stat = None
        if dir_stat is not None and stat.S_ISDIR(dir_stat.st_mode):
            result.dir_exists = True
            result.dir_writable = os.access(compiled_dir, os.W_OK | os.X_OK)
            vfs = os.statvfs(compiled_dir)
            result.free_bytes = vfs.f_bavail * vfs.f_frsize
            self._scan_compiled(result, dir_stat.st_uid, prefix, intern, state, mtimes, cancelled)

        result.uncompiled = [prefix + keys[sid] for sid, s in enumerate(state)
                             if s & (_WALKED | _COMPILED) == _WALKED]
        self._compact_table(state)
        return result

    def _scan_compiled(self, result: ViewScan, dir_uid: int, prefix: str, intern: Callable[[str], int],
                       state: bytearray, mtimes: array[int], cancelled: threading.Event) -> None:
        # The hot loop of every scan: locals only, and one stat per unchanged file.
        cache, keys, reader, ids = self._cache, self._keys, self._reader, self._ids
        unreadable, foreign, footerless = result.unreadable, result.foreign_owned, result.footerless
        orphaned, stale = result.orphaned, result.stale
        touched = array("Q")  # inodes seen, to forget the files that are gone
        compiled = external = reads = seen = 0
        with os.scandir(self._compiled_dir) as listing:
            for entry in listing:
                seen += 1
                if not seen % CANCEL_CHECK_EVERY and cancelled.is_set():
                    raise ScanCancelled
                if not entry.name.endswith(".php"):
                    continue  # .gitignore, and temporary names of an atomic recompile
                path = entry.path
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted between the listing and the stat: the race, not an error
                except OSError:
                    compiled += 1
                    unreadable.append(path)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                signature = st.st_mtime_ns << 40 | st.st_size & _SIZE_MASK
                packed = cache.get(st.st_ino)
                if packed is not None and packed >> 32 == signature:
                    sid = packed & _ID_MASK
                else:
                    reads += 1
                    try:
                        source = read_footer(path, st.st_size, reader)
                    except FileNotFoundError:
                        continue
                    except OSError:
                        # Not cached: a permission fixed later shows without the file changing.
                        compiled += 1
                        unreadable.append(path)
                        continue
                    if source is None:
                        sid = NO_SOURCE
                    else:
                        if source.startswith(prefix):
                            key = source[len(prefix):]
                        else:
                            key = self._key_of(source, prefix)
                        known = ids.get(key)
                        sid = intern(key) if known is None else known
                    cache[st.st_ino] = signature << 32 | sid
                touched.append(st.st_ino)
                compiled += 1
                if st.st_uid != dir_uid:
                    foreign.append(path)
                if sid == NO_SOURCE:
                    footerless.append(path)
                    continue
                s = state[sid]
                if not s & _RESOLVED:
                    s = self._resolve(sid, prefix, state, mtimes)
                state[sid] = s | _COMPILED
                if s & _MISSING:
                    orphaned.append(path)
                    continue
                if s & _EXTERNAL:
                    external += 1
                if mtimes[sid] >= st.st_mtime_ns // NS_PER_S:
                    stale.append(StaleView(path, self._full_path(keys[sid], prefix), mtimes[sid]))
        result.compiled, result.external, result.footer_reads = compiled, external, reads
        self.footer_reads += reads
        if len(cache) > len(touched):  # files were removed: forget them
            live = set(touched)
            for ino in [ino for ino in cache if ino not in live]:
                del cache[ino]

    @staticmethod
    def _key_of(source: str, prefix: str) -> str:
        """The table key of a source outside the root as written, e.g. through a symlink."""
        # A footer written through a symlink (views path configured without realpath) still names
        # one of this app's sources if it resolves under the root.
        resolved = os.path.realpath(source)
        return resolved[len(prefix):] if resolved.startswith(prefix) else source

    @staticmethod
    def _full_path(key: str, prefix: str) -> str:
        return key if key.startswith("/") else prefix + key

    def _resolve(self, sid: int, prefix: str, state: bytearray, mtimes: array[int]) -> int:
        """Stat a source the walk did not find: an external one, or one gone (or added after the walk)."""
        key = self._keys[sid]
        s = _RESOLVED | (_EXTERNAL if key.startswith("/") else 0)
        try:
            mtimes[sid] = os.stat(self._full_path(key, prefix)).st_mtime_ns // NS_PER_S
        except (FileNotFoundError, NotADirectoryError):
            s |= _MISSING
        state[sid] = s
        return s

    def _compact_table(self, state: bytearray) -> None:
        """Forget source paths neither walked nor named by a compiled file any more."""
        live = [sid for sid, s in enumerate(state) if s & (_WALKED | _COMPILED)]
        if len(self._keys) <= 2 * len(live) + _TABLE_SLACK:
            return
        renumber = {old: new for new, old in enumerate(live)}
        self._keys = [self._keys[sid] for sid in live]
        self._ids = {key: sid for sid, key in enumerate(self._keys)}
        renumber[NO_SOURCE] = NO_SOURCE
        cleared = ~_ID_MASK
        # An entry whose source is not live belongs to a file gone since a cancelled scan: dropped.
        self._cache = {
            ino: packed & cleared | new
            for ino, packed in self._cache.items()
            if (new := renumber.get(packed & _ID_MASK)) is not None
        }
