"""OPcache's file cache on disk (`opcache.file_cache`): the compiled scripts that outlive a reset and a
restart, and whether their source changed after they were written.

Layout, measured on PHP 8.2 FPM: one file per script, `<file_cache>/<system id>/<absolute path>.bin`,
the system id being 32 lowercase hex digits that change with the PHP build (so an upgrade leaves the old
folder behind, never read again). OPcache writes an entry when it compiles a script and never rewrites
an existing one; `opcache_reset()` leaves the folder alone; `opcache_invalidate($path, true)` deletes the
script's entry (whether or not the script is in shared memory). With `validate_timestamps=0` OPcache
loads an entry without looking at the source (the header's timestamp is then 0, so nothing in the entry
tells its source's version): after a reset or restart it serves whatever the entry holds. With
`validate_timestamps=1` it compares the source's mtime and recompiles a changed script.

So an entry's version is judged by when it was written, against its source on disk, in whole seconds
as PHP's `filemtime` reports them:
- stale: the source's mtime is later than the entry's: changed after the entry was written.
- suspect: only the source's inode change time is later (content replaced keeping its mtime, as
  `rsync -a` or `cp -p` do, or a mere chmod: the sidecar cannot tell which).
- orphaned: the source is gone (OPcache cannot reach such an entry; it only takes room).
- outside_release: the source lies under the releases directory but outside the release `current`
  points to.
A change within the second the entry was written is not seen (the same blind spot as OPcache's own).

Reading follows the rules the heal applies to compiled views: the configured directory is resolved
once, and everything below it is listed and stat'ed through directory descriptors opened with
O_NOFOLLOW; a symlink, a non-regular file, a hard-linked entry or a name not ending in `.bin` is never
followed and is reported as refused. A directory that cannot be opened or listed makes the scan
incomplete, which the caller reports instead of counts.

Hand-written rather than `os.walk`: os.walk follows no descriptors (every stat is a lookup of the whole
path, and a directory swapped for a symlink mid-walk would be followed).
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

SYSTEM_ID = re.compile(r"[0-9a-f]{32}")
ENTRY_SUFFIX = ".bin"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NS_PER_S = 1_000_000_000
CANCEL_CHECK_EVERY = 1024
# How many cached scripts are looked up in each system-id folder to tell which one the running PHP uses.
_ID_EVIDENCE = 64
_REG = stat.S_IFREG
_DIR = stat.S_IFDIR
_TYPE = 0o170000

# What the agent reports of a cached script's source: (mtime, ctime) in whole seconds, None if gone.
SourceTimes = tuple[int | None, int | None]


class ScanCancelled(Exception):
    """The collection timed out; the partial scan is dropped."""


@dataclass(slots=True)
class FileCacheScan:
    """One scan of a file-cache directory. Lists hold source paths (the entry names without `.bin`)."""

    directory: str  # as configured (opcache.file_cache)
    resolved: str | None = None  # its realpath, the directory actually read
    problem: str | None = None  # why the directory could not be read at all; nothing below is known
    system_id: str | None = None  # the folder the running PHP reads, None if there is none yet
    other_system_ids: list[str] = field(default_factory=list)  # folders of other PHP builds
    entries: int = 0
    stale: list[str] = field(default_factory=list)
    suspect: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    outside_release: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # paths below the directory that are not entries
    unreadable: list[str] = field(default_factory=list)  # directories that could not be listed
    oldest_stale_mtime: int | None = None

    @property
    def complete(self) -> bool:
        return self.problem is None and not self.unreadable


def _under(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def entry_relpath(source: str) -> str | None:
    """The entry's path below the system-id folder for an absolute script path, or None if it has none.

    `..` and `.` components are refused: OPcache keys scripts by their resolved path, so a name with
    them was never written by it, and following one would leave the folder.
    """
    if not source.startswith("/"):
        return None
    parts = source[1:].split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return "/".join(parts) + ENTRY_SUFFIX


def open_directory(path: str) -> tuple[int, str]:
    """A descriptor of the resolved file-cache directory and its realpath; raises OSError."""
    resolved = os.path.realpath(path)
    return os.open(resolved, DIR_FLAGS), resolved


def system_ids(dir_fd: int) -> list[tuple[str, int]]:
    """(name, mtime_ns) of each system-id folder directly in the file-cache directory (no symlinks)."""
    out = []
    with os.scandir(dir_fd) as listing:
        for entry in listing:
            if SYSTEM_ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                out.append((entry.name, entry.stat(follow_symlinks=False).st_mtime_ns))
    return out


def choose_system_id(dir_fd: int, candidates: list[tuple[str, int]], cached: list[str]) -> str | None:
    """The folder the running PHP uses: the one holding entries of the most scripts now in shared
    memory (OPcache wrote or loaded them), else the most recently changed one."""
    if len(candidates) <= 1:
        return candidates[0][0] if candidates else None
    sample = [rel for rel in (entry_relpath(p) for p in cached[:_ID_EVIDENCE]) if rel]

    def evidence(candidate: tuple[str, int]) -> tuple[int, int]:
        name, mtime = candidate
        found = 0
        for rel in sample:
            try:
                os.stat(f"{name}/{rel}", dir_fd=dir_fd, follow_symlinks=False)
                found += 1
            except OSError:
                pass
        return found, mtime

    return max(candidates, key=evidence)[0]


@dataclass(slots=True)
class FileCacheWalk:
    """What is on disk, before any source is looked at: the listing a collection may take while the
    agent runs inside FPM, and classify afterwards."""

    directory: str
    resolved: str | None = None
    problem: str | None = None
    system_id: str | None = None
    other_system_ids: list[str] = field(default_factory=list)
    undecided: bool = False  # several system ids and no cached scripts to tell them apart by
    entries: list[tuple[str, int]] = field(default_factory=list)  # (source path, written, whole seconds)
    refused: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def walk_file_cache(directory: str, cached: list[str] | None,
                    cancelled: threading.Event | None = None) -> FileCacheWalk:
    """List `directory`'s entries (blocking). `cached` are the scripts in shared memory, which tell
    the running build's folder from others; None when not known yet (the walk is then `undecided` if
    there are several folders, and walks none)."""
    walk = FileCacheWalk(directory)
    try:
        top_fd, walk.resolved = open_directory(directory)
    except OSError as exc:
        walk.problem = f"cannot open {directory}: {exc.strerror or exc}"
        return walk
    try:
        try:
            candidates = system_ids(top_fd)
        except OSError as exc:
            walk.problem = f"cannot list {walk.resolved}: {exc.strerror or exc}"
            return walk
        if cached is None and len(candidates) > 1:
            walk.undecided = True
            return walk
        walk.system_id = choose_system_id(top_fd, candidates, cached or [])
        walk.other_system_ids = sorted(n for n, _ in candidates if n != walk.system_id)
        if walk.system_id is not None:
            _walk(top_fd, walk, cancelled or threading.Event())
    finally:
        os.close(top_fd)
    return walk


def scan_file_cache(
    directory: str,
    sources: Mapping[str, SourceTimes],
    *,
    release_dir: str | None = None,
    cancelled: threading.Event | None = None,
) -> FileCacheScan:
    """Walk and classify `directory` (opcache.file_cache) in one go. Blocking."""
    return classify(walk_file_cache(directory, list(sources), cancelled), sources, release_dir)


def classify(walk: FileCacheWalk, sources: Mapping[str, SourceTimes],
             release_dir: str | None) -> FileCacheScan:
    """Judge each entry against its source. `sources` maps the paths of scripts the agent just stat'ed
    inside FPM (the cached scripts) to their times; any other entry's source is stat'ed here (blocking).
    `release_dir` is the resolved release `current` points to. Problems are in the result, never raised.
    """
    scan = FileCacheScan(walk.directory, walk.resolved, walk.problem, walk.system_id,
                         walk.other_system_ids, len(walk.entries), refused=walk.refused,
                         unreadable=list(walk.unreadable))
    releases = release_dir.rstrip("/").rsplit("/", 1)[0] if release_dir else None
    stale, suspect, orphaned, outside = scan.stale, scan.suspect, scan.orphaned, scan.outside_release
    oldest: int | None = None
    for source, written in walk.entries:
        times = sources.get(source)
        if times is None:
            times = _stat_source(source)
            if times is None:
                scan.unreadable.append(f"{source}: cannot stat the source")
                continue
        mtime, ctime = times
        if releases and release_dir and _under(source, releases) and not _under(source, release_dir):
            outside.append(source)
        if mtime is None:
            orphaned.append(source)
        elif mtime > written:
            stale.append(source)
            if oldest is None or mtime < oldest:
                oldest = mtime
        elif ctime is not None and ctime > written:
            suspect.append(source)
    scan.oldest_stale_mtime = oldest
    return scan


def _walk(top_fd: int, walk: FileCacheWalk, cancelled: threading.Event) -> None:
    assert walk.system_id is not None
    base = f"{walk.resolved}/{walk.system_id}"
    try:
        first_fd = os.open(walk.system_id, DIR_FLAGS, dir_fd=top_fd)
    except OSError as exc:
        walk.unreadable.append(f"{base}: {exc.strerror or exc}")
        return
    pending: list[tuple[int, str]] = [(first_fd, "/")]  # (descriptor, source path prefix)
    seen = 0
    entries, refused = walk.entries, walk.refused
    try:
        while pending:
            dir_fd, prefix = pending.pop()
            try:
                with os.scandir(dir_fd) as listing:
                    for entry in listing:
                        seen += 1
                        if not seen % CANCEL_CHECK_EVERY and cancelled.is_set():
                            raise ScanCancelled
                        name = entry.name
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # removed between the listing and the stat
                        kind = st.st_mode & _TYPE
                        if kind == _DIR:
                            try:
                                pending.append((os.open(name, DIR_FLAGS, dir_fd=dir_fd), f"{prefix}{name}/"))
                            except FileNotFoundError:
                                continue
                            except OSError as exc:
                                walk.unreadable.append(f"{base}{prefix}{name}: {exc.strerror or exc}")
                            continue
                        if kind != _REG or not name.endswith(ENTRY_SUFFIX) or st.st_nlink != 1:
                            refused.append(f"{base}{prefix}{name}")
                            continue
                        entries.append((prefix + name[:-4], st.st_mtime_ns // NS_PER_S))
            except PermissionError as exc:
                walk.unreadable.append(f"{base}{prefix.rstrip('/')}: {exc.strerror or exc}")
            finally:
                os.close(dir_fd)
    finally:
        for fd, _ in pending:  # left open by a cancelled walk
            os.close(fd)


def _stat_source(path: str) -> SourceTimes | None:
    """The source's times, (None, None) if it is gone, None if that cannot be known."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError:
        return None
    return st.st_mtime_ns // NS_PER_S, st.st_ctime_ns // NS_PER_S
