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

Memory is kept flat for 100,000 files (Python objects cost ~30-80 bytes each, so the per-file state
lives in arrays): what the last scan saw of each compiled file (inode, mtime, size, source id) is kept in
the directory's listing order, which an unchanged directory repeats, so a rescan matches each entry
against the next expected one instead of looking it up in a dict. Each source path is stored once, in
a table indexed by source id, with the order of the last walk; the table's path -> id dict exists only
while a scan meets paths it did not expect (the first scan, or sources added or removed).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from array import array
from dataclasses import dataclass, field

from exporter.fs.footer import TailReader, read_footer, read_tail
from exporter.fs.view_sources import CANCEL_CHECK_EVERY, NS_PER_S, ScanCancelled, iter_sources

NO_SOURCE = (1 << 32) - 1  # the source id recorded for a file without a readable footer

# Per-scan state of a source id.
_WALKED = 1  # found by the walk of the views directory
_COMPILED = 2  # named by at least one compiled file
_RESOLVED = 4  # existence and mtime known for this scan
_MISSING = 8
_EXTERNAL = 16

# Compact the source table once it holds this many more paths than are still in use.
_TABLE_SLACK = 4096
# How far ahead in the last listing or walk an entry is looked for when it is not the next one expected
# (entries removed since). Past that, the rest is searched (a C loop, ~2 ms per 100,000 entries) at most
# _FAR_SEARCHES times per scan, so that a new file costs little and a reordered directory costs at
# worst its footer reads, as a first scan does.
_LOOKAHEAD = 256
_FAR_SEARCHES = 32


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


def _find(items: array[int], value: int, start: int, far_searches: int) -> tuple[int, int]:
    """(1 + the index of `value` in `items` from `start` on, or 0 if not found; searches left)."""
    with contextlib.suppress(ValueError):
        return items.index(value, start, start + _LOOKAHEAD) + 1, far_searches
    if far_searches and start + _LOOKAHEAD < len(items):
        with contextlib.suppress(ValueError):
            return items.index(value, start + _LOOKAHEAD) + 1, far_searches - 1
        return 0, far_searches - 1
    return 0, far_searches


@dataclass(slots=True)
class _Listing:
    """What a complete scan saw of each compiled file, in the directory's listing order."""

    inodes: array[int] = field(default_factory=lambda: array("Q"))
    mtimes_ns: array[int] = field(default_factory=lambda: array("q"))
    sizes: array[int] = field(default_factory=lambda: array("q"))
    sources: array[int] = field(default_factory=lambda: array("I"))  # source ids, or NO_SOURCE

    def head(self, count: int) -> _Listing:
        return _Listing(self.inodes[:count], self.mtimes_ns[:count], self.sizes[:count],
                        self.sources[:count])


class _SourceTable:
    """The source table as one scan sees it: ids are stable across scans, state and mtimes are this
    scan's, and the path -> id dict is built only if the scan meets a path by surprise."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys  # source id -> path relative to the root, or absolute outside it
        self.state = bytearray(len(keys))
        self.mtimes = array("q", bytes(8 * len(keys)))  # whole seconds
        self._index: dict[str, int] | None = None

    def id_of(self, key: str) -> int:
        """The id of `key`, added to the table if it is new."""
        index = self._index
        if index is None:
            index = self._index = {k: sid for sid, k in enumerate(self.keys)}
        sid = index.get(key)
        if sid is None:
            sid = index[key] = len(self.keys)
            self.keys.append(key)
            self.state.append(0)
            self.mtimes.append(0)
        return sid


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
        self._root: str | None = None  # the resolved views dir the table and listing were built against
        self._keys: list[str] = []  # source id -> key: relative to the root, or absolute
        self._walk_order = array("I")  # source ids in the order the last complete walk found them
        self._listing = _Listing()
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
            self._keys, self._walk_order, self._listing = [], array("I"), _Listing()

    def _scan(self, cancelled: threading.Event) -> ViewScan:
        root = os.path.realpath(self._views_dir)
        self._reset_if_moved(root)
        prefix = root.rstrip(os.sep) + os.sep
        result = ViewScan(views_dir=root, compiled_dir=self._compiled_dir)
        table = _SourceTable(self._keys)
        walk_order = self._walk(root, table, cancelled, result.unreadable)
        result.sources = len(walk_order)

        listing = _Listing()
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
            listing = self._scan_compiled(result, dir_stat.st_uid, prefix, table, cancelled)

        # A walked source named by no compiled file is in exactly this state: found with bytes.find
        # rather than a Python loop over every source.
        keys, state, uncompiled = table.keys, table.state, result.uncompiled
        sid = state.find(_WALKED | _RESOLVED)
        while sid >= 0:
            uncompiled.append(prefix + keys[sid])
            sid = state.find(_WALKED | _RESOLVED, sid + 1)
        self._walk_order, self._listing = walk_order, listing
        self._compact_table(state)
        return result

    def _walk(self, root: str, table: _SourceTable, cancelled: threading.Event,
              unreadable: list[str]) -> array[int]:
        """Walk the sources into `table`; return their ids in walk order."""
        keys, state, mtimes = table.keys, table.state, table.mtimes
        expected = self._walk_order
        n = len(expected)
        known = len(keys)  # ids below this may be in the last walk
        cursor = 0
        far_searches = _FAR_SEARCHES
        order: array[int] | None = None  # None while the walk repeats the last one
        for rel, mtime in iter_sources(root, cancelled, unreadable):
            if cursor < n and keys[sid := expected[cursor]] == rel:
                cursor += 1
                if order is not None:
                    order.append(sid)
            else:
                if order is None:
                    order = expected[:cursor]
                sid = table.id_of(rel)
                order.append(sid)
                if sid < known:  # sources removed since: match on after them
                    after, far_searches = _find(expected, sid, cursor, far_searches)
                    cursor = after or cursor
            state[sid] = _WALKED | _RESOLVED
            mtimes[sid] = mtime
        if order is None:
            order = expected if cursor == n else expected[:cursor]
        return order

    def _scan_compiled(self, result: ViewScan, dir_uid: int, prefix: str, table: _SourceTable,
                       cancelled: threading.Event) -> _Listing:
        # The hot loop of every scan: locals only, and one stat per unchanged file. An unchanged file
        # is the next one the last listing expects; anything else is looked for a little further on,
        # and read when not found: a wrong guess costs a footer read, never a wrong answer.
        keys, state, mtimes, reader = table.keys, table.state, table.mtimes, self._reader
        unreadable, foreign, footerless = result.unreadable, result.foreign_owned, result.footerless
        orphaned, stale = result.orphaned, result.stale
        last = self._listing
        last_inodes, last_mtimes, last_sizes, last_sources = (
            last.inodes, last.mtimes_ns, last.sizes, last.sources)
        n = len(last_inodes)
        cursor = 0
        far_searches = _FAR_SEARCHES
        listing: _Listing | None = None  # None while the listing repeats the last one
        compiled = external = reads = seen = 0
        with os.scandir(self._compiled_dir) as entries:
            for entry in entries:
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
                ino, mtime_ns, size = st.st_ino, st.st_mtime_ns, st.st_size
                if (cursor < n and last_inodes[cursor] == ino and last_mtimes[cursor] == mtime_ns
                        and last_sizes[cursor] == size):
                    sid = last_sources[cursor]
                    cursor += 1
                    if listing is not None:
                        listing.inodes.append(ino)
                        listing.mtimes_ns.append(mtime_ns)
                        listing.sizes.append(size)
                        listing.sources.append(sid)
                else:
                    if listing is None:
                        listing = last.head(cursor)
                    at = -1
                    if n:
                        after, far_searches = _find(last_inodes, ino, cursor, far_searches)
                        at = after - 1
                    if at >= 0 and last_mtimes[at] == mtime_ns and last_sizes[at] == size:
                        sid = last_sources[at]
                        cursor = at + 1
                    else:
                        # Only a match moves the cursor: the same inode with other content may be a
                        # new file given a removed file's inode, anywhere in the old order.
                        reads += 1
                        try:
                            source = read_footer(path, size, reader)
                        except FileNotFoundError:
                            continue
                        except OSError:
                            # Not remembered: a permission fixed later shows without the file changing.
                            compiled += 1
                            unreadable.append(path)
                            continue
                        if source is None:
                            sid = NO_SOURCE
                        elif source.startswith(prefix):
                            sid = table.id_of(source[len(prefix):])
                        else:
                            sid = table.id_of(self._key_of(source, prefix))
                    listing.inodes.append(ino)
                    listing.mtimes_ns.append(mtime_ns)
                    listing.sizes.append(size)
                    listing.sources.append(sid)
                compiled += 1
                if st.st_uid != dir_uid:
                    foreign.append(path)
                if sid == NO_SOURCE:
                    footerless.append(path)
                    continue
                s = state[sid]
                if not s & _RESOLVED:
                    s = self._resolve(sid, prefix, table)
                state[sid] = s | _COMPILED
                if s & _MISSING:
                    orphaned.append(path)
                    continue
                if s & _EXTERNAL:
                    external += 1
                if mtimes[sid] >= mtime_ns // NS_PER_S:
                    stale.append(StaleView(path, self._full_path(keys[sid], prefix), mtimes[sid]))
        result.compiled, result.external, result.footer_reads = compiled, external, reads
        self.footer_reads += reads
        if listing is None:
            listing = last if cursor == n else last.head(cursor)
        return listing

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

    def _resolve(self, sid: int, prefix: str, table: _SourceTable) -> int:
        """Stat a source the walk did not find: an external one, or one gone (or added after the walk)."""
        key = table.keys[sid]
        s = _RESOLVED | (_EXTERNAL if key.startswith("/") else 0)
        try:
            table.mtimes[sid] = os.stat(self._full_path(key, prefix)).st_mtime_ns // NS_PER_S
        except (FileNotFoundError, NotADirectoryError):
            s |= _MISSING
        table.state[sid] = s
        return s

    def _compact_table(self, state: bytearray) -> None:
        """Forget source paths neither walked nor named by a compiled file any more."""
        # A path in use has a non-zero state; counting zero bytes is a C loop, so the check is cheap.
        live_count = len(state) - state.count(0)
        if len(self._keys) <= 2 * live_count + _TABLE_SLACK:
            return
        live = [sid for sid, s in enumerate(state) if s]
        renumber = array("I", [NO_SOURCE]) * len(self._keys)
        for new, old in enumerate(live):
            renumber[old] = new
        self._keys = [self._keys[sid] for sid in live]
        # Both lists refer only to ids in use by this scan, so every one of them has a new number.
        self._walk_order = array("I", [renumber[sid] for sid in self._walk_order])
        listing = self._listing
        listing.sources = array("I", [sid if sid == NO_SOURCE else renumber[sid] for sid in listing.sources])
