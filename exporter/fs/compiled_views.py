"""Incremental scan of a Laravel app's compiled views against its Blade sources.

Each compiled file is mapped to its source by its footer (`exporter.fs.footer`), never by recomputing
Laravel's file-name hash, which changed across versions and with every symlinked release directory.
A footer is read again only when the file's (inode, size, mtime_ns, ctime_ns) changed, so a rescan of
an unchanged tree costs one stat per file, like `find`, and like `find` each is relative to the
directory's descriptor (`fstatat`) rather than a lookup of the whole path. ctime is in the key because
chmod and chown change nothing else, and a file made unreadable must be opened again to be reported.

What is counted, by Laravel's own rules (`Compiler::isExpired`, 8.x-10.x):
- stale: the source's `filemtime` (whole seconds) is >= the compiled file's; Laravel recompiles it on
  the next request, racing any concurrent request that includes it.
- orphaned: the footer names a source that no longer exists (Laravel 8-10 answer 500 for it).
- external: the footer names an existing file outside this app's views directory: a package view, or
  a release directory that `current` no longer points to. It is not one of this app's sources, but
  Laravel would check it against that very file, so it is checked for staleness the same way.
- uncompiled: a source under the views directory that no compiled footer names.
- footerless: a `*.php` file with no footer at its end (half-written, truncated or foreign).
- not counted at all: `*.blade.php` files in the compiled directory. Laravel writes the template of an
  inline component (one whose `render()` returns a string) there as `<sha1>.blade.php`
  (`Component::createBladeViewFromString`) and compiles it like any view; the template is a source, its
  compiled file is counted as external.

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

from exporter.fs.access import UserGroup, can_create_files
from exporter.fs.footer import (
    FOOTER_ENDING,
    FOOTER_OPENING,
    READ_FLAGS,
    TAIL_BYTES,
    TailReader,
    footer_in,
    read_footer,
    read_tail,
)
from exporter.fs.view_sources import (
    BLADE_SUFFIX,
    CANCEL_CHECK_EVERY,
    DIR_FLAGS,
    FILE_TYPE_MASK,
    NS_PER_S,
    ScanCancelled,
    iter_sources,
)

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
    ctimes_ns: array[int] = field(default_factory=lambda: array("q"))
    sizes: array[int] = field(default_factory=lambda: array("q"))
    sources: array[int] = field(default_factory=lambda: array("I"))  # source ids, or NO_SOURCE

    def head(self, count: int) -> _Listing:
        return _Listing(self.inodes[:count], self.mtimes_ns[:count], self.ctimes_ns[:count],
                        self.sizes[:count], self.sources[:count])


class _SourceTable:
    """The source table as one scan sees it: ids are stable across scans, state and mtimes are this
    scan's, and the path -> id dict is built only if the scan meets a path by surprise."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys  # source id -> path relative to the root, or absolute outside it
        self.state = bytearray(len(keys))
        self.mtimes = array("q", bytes(8 * len(keys)))  # whole seconds
        self._index: dict[str, int] | None = None

    def index(self) -> dict[str, int]:
        """The path -> id dict, built now if it was not (a first scan meets every path by surprise)."""
        if self._index is None:
            self._index = {k: sid for sid, k in enumerate(self.keys)}
        return self._index

    def id_of(self, key: str) -> int:
        """The id of `key`, added to the table if it is new."""
        index = self.index()
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
                 reader: TailReader = read_tail, php_user: UserGroup | None = None) -> None:
        self._views_dir = os.fspath(views_dir)
        self._php_user = php_user  # whom dir_writable is judged for; None: this process
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
            dir_fd = os.open(compiled_dir, DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            dir_fd = -1
        if dir_fd >= 0:
            try:
                dir_stat = os.fstat(dir_fd)
                result.dir_exists = True
                vfs = os.fstatvfs(dir_fd)
                result.free_bytes = vfs.f_bavail * vfs.f_frsize
                if self._php_user is None:
                    result.dir_writable = os.access(compiled_dir, os.W_OK | os.X_OK)
                else:
                    result.dir_writable = (not vfs.f_flag & os.ST_RDONLY
                                           and can_create_files(dir_stat, self._php_user))
                listing = self._scan_compiled(result, dir_fd, dir_stat.st_uid, prefix, table, cancelled)
            finally:
                os.close(dir_fd)

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
        if n == 0:
            return self._walk_first(root, table, cancelled, unreadable)
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

    @staticmethod
    def _walk_first(root: str, table: _SourceTable, cancelled: threading.Event,
                    unreadable: list[str]) -> array[int]:
        """The walk with no earlier order to follow: every source is looked up (mostly added) by path."""
        keys, state, mtimes, index = table.keys, table.state, table.mtimes, table.index()
        order = array("I")
        add_key, add_state, add_mtime, add_order = keys.append, state.append, mtimes.append, order.append
        found = _WALKED | _RESOLVED
        for rel, mtime in iter_sources(root, cancelled, unreadable):
            sid = index.get(rel)
            if sid is None:
                sid = index[rel] = len(keys)
                add_key(rel)
                add_state(found)
                add_mtime(mtime)
            else:
                state[sid] = found
                mtimes[sid] = mtime
            add_order(sid)
        return order

    def _scan_compiled(self, result: ViewScan, dir_fd: int, dir_uid: int, prefix: str, table: _SourceTable,
                       cancelled: threading.Event) -> _Listing:
        if not self._listing.inodes and self._reader is read_tail:
            return self._scan_compiled_cold(result, dir_fd, dir_uid, prefix, table, cancelled)
        # The hot loop of every rescan: locals only, and one stat per unchanged file. An unchanged file
        # is the next one the last listing expects; anything else is looked for a little further on,
        # and read when not found: a wrong guess costs a footer read, never a wrong answer.
        state, mtimes, reader = table.state, table.mtimes, self._reader
        here = self._compiled_dir.rstrip(os.sep) + os.sep  # entries are listed by name only
        unreadable, foreign, stale = result.unreadable, result.foreign_owned, result.stale
        last = self._listing
        last_inodes, last_mtimes, last_ctimes, last_sizes, last_sources = (
            last.inodes, last.mtimes_ns, last.ctimes_ns, last.sizes, last.sources)
        n = len(last_inodes)
        cursor = 0
        far_searches = _FAR_SEARCHES
        listing: _Listing | None = None  # None while the listing repeats the last one
        compiled = external = reads = seen = 0
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                seen += 1
                if not seen % CANCEL_CHECK_EVERY and cancelled.is_set():
                    raise ScanCancelled
                name = entry.name
                # Not .gitignore, nor temporary names of an atomic recompile, nor inline templates.
                if not name.endswith(".php") or name.endswith(BLADE_SUFFIX):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted between the listing and the stat: the race, not an error
                except OSError:
                    compiled += 1
                    unreadable.append(here + name)
                    continue
                if st.st_mode & FILE_TYPE_MASK != stat.S_IFREG:
                    continue
                ino, mtime_ns, ctime_ns, size = st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size
                if (cursor < n and last_inodes[cursor] == ino and last_mtimes[cursor] == mtime_ns
                        and last_ctimes[cursor] == ctime_ns and last_sizes[cursor] == size):
                    sid = last_sources[cursor]
                    cursor += 1
                    if listing is not None:
                        listing.inodes.append(ino)
                        listing.mtimes_ns.append(mtime_ns)
                        listing.ctimes_ns.append(ctime_ns)
                        listing.sizes.append(size)
                        listing.sources.append(sid)
                else:
                    if listing is None:
                        listing = last.head(cursor)
                    at = -1
                    if n:
                        after, far_searches = _find(last_inodes, ino, cursor, far_searches)
                        at = after - 1
                    if (at >= 0 and last_mtimes[at] == mtime_ns and last_ctimes[at] == ctime_ns
                            and last_sizes[at] == size):
                        sid = last_sources[at]
                        cursor = at + 1
                    else:
                        # Only a match moves the cursor: the same inode with other content may be a
                        # new file given a removed file's inode, anywhere in the old order.
                        reads += 1
                        try:
                            source = read_footer(here + name, size, reader)
                        except FileNotFoundError:
                            continue
                        except OSError:
                            # Not remembered: a permission fixed later shows without the file changing.
                            compiled += 1
                            unreadable.append(here + name)
                            continue
                        sid = self._source_id(source, prefix, table)
                    listing.inodes.append(ino)
                    listing.mtimes_ns.append(mtime_ns)
                    listing.ctimes_ns.append(ctime_ns)
                    listing.sizes.append(size)
                    listing.sources.append(sid)
                compiled += 1
                if st.st_uid != dir_uid:
                    foreign.append(here + name)
                s = state[sid] if sid != NO_SOURCE else 0
                if s & _WALKED:  # one of this app's sources, found by the walk: the common case
                    state[sid] = s | _COMPILED
                    if mtimes[sid] >= mtime_ns // NS_PER_S:
                        stale.append(StaleView(here + name, prefix + table.keys[sid], mtimes[sid]))
                else:
                    external += self._classify_other(here + name, sid, mtime_ns, prefix, table, result)
        result.compiled, result.external, result.footer_reads = compiled, external, reads
        self.footer_reads += reads
        if listing is None:
            listing = last if cursor == n else last.head(cursor)
        return listing

    def _scan_compiled_cold(self, result: ViewScan, dir_fd: int, dir_uid: int, prefix: str,
                            table: _SourceTable, cancelled: threading.Event) -> _Listing:
        """The first scan, which reads every footer: the rescan loop without its matching, flattened.

        It pays for one read per file, so per-file Python work is kept to locals: the read is inlined
        (open by name relative to the directory's descriptor, fstat, one pread of the tail), and a
        footer written exactly as Laravel writes it, naming a path under the views directory, is cut
        out as bytes and looked up without a method call.
        """
        state, mtimes, keys, index = table.state, table.mtimes, table.keys, table.index()
        unreadable, foreign, stale = result.unreadable, result.foreign_owned, result.stale
        listing = _Listing()
        add_inode, add_mtime, add_ctime, add_size, add_source = (
            listing.inodes.append, listing.mtimes_ns.append, listing.ctimes_ns.append,
            listing.sizes.append, listing.sources.append)
        add_unreadable, add_foreign = unreadable.append, foreign.append
        # O_NONBLOCK: a FIFO planted in the directory must not hang the open; fstat then rejects it.
        # O_NOATIME: a first read right after a compile would otherwise write 100,000 inodes back
        # (relatime updates an atime that is not newer than the mtime); only the owner or root may ask,
        # so the first refusal drops it for the rest of the scan.
        open_, fstat, pread, close = os.open, os.fstat, os.pread, os.close
        plain_flags = READ_FLAGS | os.O_NONBLOCK
        flags = plain_flags | getattr(os, "O_NOATIME", 0)
        tail_bytes, ending, opening = TAIL_BYTES, FOOTER_ENDING, FOOTER_OPENING
        prefix_bytes, opening_length, body_end = os.fsencode(prefix), len(opening), -len(ending)
        body_start = len(prefix_bytes)
        source_of = self._source_id
        here = self._compiled_dir.rstrip(os.sep) + os.sep  # entries are listed by name only
        # Module constants as locals: this loop body runs once per compiled file.
        regular, file_type, no_source = stat.S_IFREG, FILE_TYPE_MASK, NO_SOURCE
        walked, compiled_flag, ns_per_s, blade = _WALKED, _COMPILED, NS_PER_S, BLADE_SUFFIX
        is_set, check_every = cancelled.is_set, CANCEL_CHECK_EVERY
        compiled = external = reads = seen = 0
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                seen += 1
                if not seen % check_every and is_set():
                    raise ScanCancelled
                name = entry.name
                if not name.endswith(".php") or name.endswith(blade):
                    continue
                # The directory entry's type costs no syscall; the stat comes from the open descriptor,
                # which is cheaper than a path lookup and describes exactly the file that is read.
                if not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    try:
                        fd = open_(name, flags, dir_fd=dir_fd)
                    except PermissionError:
                        if flags == plain_flags:
                            raise
                        flags = plain_flags
                        fd = open_(name, flags, dir_fd=dir_fd)
                    try:
                        st = fstat(fd)
                        if st.st_mode & file_type != regular:
                            continue
                        size = st.st_size
                        reads += 1
                        tail = pread(fd, tail_bytes, size - tail_bytes if size > tail_bytes else 0)
                    finally:
                        close(fd)
                except FileNotFoundError:
                    continue  # deleted between the listing and the read: the race, not an error
                except OSError:
                    compiled += 1
                    add_unreadable(here + name)
                    continue
                start = tail.rfind(opening) + opening_length
                if start >= opening_length and tail.endswith(ending) and tail.startswith(prefix_bytes, start):
                    key = tail[start + body_start:body_end].decode("utf-8", "surrogateescape")
                    sid = index.get(key)
                    if sid is None:
                        sid = table.id_of(key)
                else:
                    try:
                        source = footer_in(tail, here + name, size)
                    except FileNotFoundError:
                        continue
                    except OSError:
                        compiled += 1
                        add_unreadable(here + name)
                        continue
                    sid = source_of(source, prefix, table)
                mtime_ns = st.st_mtime_ns
                add_inode(st.st_ino)
                add_mtime(mtime_ns)
                add_ctime(st.st_ctime_ns)
                add_size(size)
                add_source(sid)
                compiled += 1
                if st.st_uid != dir_uid:
                    add_foreign(here + name)
                s = state[sid] if sid != no_source else 0
                if s & walked:
                    state[sid] = s | compiled_flag
                    if mtimes[sid] >= mtime_ns // ns_per_s:
                        stale.append(StaleView(here + name, prefix + keys[sid], mtimes[sid]))
                else:
                    external += self._classify_other(here + name, sid, mtime_ns, prefix, table, result)
        result.compiled, result.external, result.footer_reads = compiled, external, reads
        self.footer_reads += reads
        return listing

    def _source_id(self, source: str | None, prefix: str, table: _SourceTable) -> int:
        """The source id a footer names (NO_SOURCE for no footer)."""
        if source is None:
            return NO_SOURCE
        if source.startswith(prefix):
            return table.id_of(source[len(prefix):])
        return table.id_of(self._key_of(source, prefix))

    def _classify_other(self, path: str, sid: int, mtime_ns: int, prefix: str, table: _SourceTable,
                        result: ViewScan) -> int:
        """Count a compiled file whose source the walk did not find; 1 if that source is external."""
        if sid == NO_SOURCE:
            result.footerless.append(path)
            return 0
        s = table.state[sid]
        if not s & _RESOLVED:
            s = self._resolve(sid, prefix, table)
        table.state[sid] = s | _COMPILED
        if s & _MISSING:
            result.orphaned.append(path)
            return 0
        source_mtime = table.mtimes[sid]
        if source_mtime >= mtime_ns // NS_PER_S:
            result.stale.append(StaleView(path, self._full_path(table.keys[sid], prefix), source_mtime))
        return 1 if s & _EXTERNAL else 0

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
