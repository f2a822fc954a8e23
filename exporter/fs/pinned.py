"""A directory pinned by device and inode, and every change made in it through one descriptor of it.

The heal writes and deletes in directories another account (the app's user) can write to. A path
string is resolved again by the kernel at each use, so a check followed by a write through the same
path can be turned elsewhere by swapping a component for a symlink in between. Here the directory is
opened once (`O_DIRECTORY | O_NOFOLLOW`), the descriptor is checked to be the inode pinned when
cachewarden started, and every operation is relative to that descriptor (`openat`, `renameat`,
`unlinkat`, `fstatat` without following, through Python's `dir_fd=` arguments), as coreutils' `rm`
and `find -delete` do. Names are single path components; a symlink in the directory is never
followed, for data or for metadata. Nothing here consults a path string after the open except
`verify`, which asks whether the path still leads to the pinned inode.

Hand-written because no library on PyPI offers `*at` file operations beyond the standard library's
`dir_fd=` arguments, which is what this module is made of.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

# Temporary names carry this mark, so a leftover one is recognisable (and never named like a view).
TMP_MARK = ".cwtmp-"
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class ForeignSymlink(OSError):
    """A symlink on the way to a directory that root does not own: anyone could have planted it."""


# Symlinks followed in one walk at most, as the kernel's own limit (MAXSYMLINKS).
MAX_SYMLINKS = 40
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_directory(path: str | Path) -> int:
    """A descriptor of the directory at the absolute `path`, reached one component at a time from `/`
    with O_NOFOLLOW. A symlink on the way is followed only when root owns it: only root can have
    made it (the rule Linux's fs.protected_symlinks applies in sticky directories), so an operator's
    `/var/cache -> /data/cache` is followed and a link the app's user swapped in is refused with
    ForeignSymlink. Raises OSError. The caller closes the descriptor.

    `os.path.realpath` followed by an open would follow any link, and the path could change between
    the two; this walk decides and opens in the same step.
    """
    text = os.fspath(path)
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    parts = text.split("/")
    parts.reverse()  # a stack: the next component last
    fd = os.open("/", _DIR)
    links = 0
    try:
        while parts:
            part = parts.pop()
            if part in ("", "."):
                continue
            try:
                child = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise exc from None
                if st.st_uid != 0:
                    raise ForeignSymlink(errno.ELOOP, f"a symlink owned by uid {st.st_uid}, not root, "
                                         "is on the way; not followed", part) from None
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many symlinks on the way", text) from None
                target = os.readlink(part, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = -1
                    fd = os.open("/", _DIR)
                parts.extend(reversed(target.split("/")))
                continue
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


class BadName(ValueError):
    """Not a single path component (a slash, empty, "." or ".."): it could reach out of the directory."""


def check_name(name: str) -> str:
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise BadName(f"{name!r} is not a file name directly in the directory")
    return name


class PinnedDirectory:
    """An open descriptor of one directory and the operations the heal makes inside it.

    `verify` is the owner's check that the directory's path still leads to the pinned inode (it
    raises whatever the owner raises): the descriptor was checked when it was opened, and callers
    check again after their last change, so that a directory moved meanwhile is reported. Use as a
    context manager, or `close()` it.
    """

    def __init__(self, fd: int, path: Path, verify: Callable[[], None]) -> None:
        self.fd = fd
        self.path = path
        self._verify = verify

    def __enter__(self) -> PinnedDirectory:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def verify(self) -> None:
        """Raise (the owner's exception) unless the directory's path still leads to the pinned inode."""
        self._verify()

    def where(self, name: str) -> str:
        """The path of `name` for messages and for other programs (PHP's OPcache), never for access."""
        return f"{self.path}/{name}"

    # --- reading ------------------------------------------------------------------------------

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def lstat(self, name: str) -> os.stat_result:
        """The entry itself, a symlink included (never its target). Raises OSError."""
        return os.stat(check_name(name), dir_fd=self.fd, follow_symlinks=False)

    def open(self, name: str, flags: int = 0) -> int:
        """A descriptor of the file `name` (O_RDONLY unless `flags` say otherwise); a symlink fails
        with ELOOP instead of being followed. The caller closes it."""
        return os.open(check_name(name), _READ | flags, dir_fd=self.fd)

    def read_tail(self, name: str, size: int, length: int) -> bytes:
        """The last `length` bytes of `name`, whose size was `size` (exporter.fs.footer's TailReader)."""
        fd = self.open(name)
        try:
            return os.pread(fd, length, max(0, size - length))
        finally:
            os.close(fd)

    # --- changing -----------------------------------------------------------------------------

    def replace(self, name: str, data: bytes, *, uid: int, gid: int, mode: int,
                mtime: float | None = None) -> None:
        """Make `name` a new regular file holding `data`, atomically: written to a temporary name,
        given its owner, mode and mtime, fsync'ed, then renamed over `name`. A symlink at `name` is
        replaced, never followed; a reader sees the old file or the new one, never a partial one.
        uid/gid -1 leave that id as created. Raises OSError (the temporary file is removed)."""
        check_name(name)
        tmp = f"{name}{TMP_MARK}{secrets.token_hex(8)}"
        fd = os.open(tmp, _CREATE, 0o600, dir_fd=self.fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if (uid, gid) != (-1, -1):
                    os.fchown(fd, uid, gid)
                # After the chown, which clears set-id bits; the mode is never more than rwx bits.
                os.fchmod(fd, mode & 0o777)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            raise

    def unlink(self, name: str) -> None:
        """Remove the entry `name` (a symlink itself, not its target). Raises OSError."""
        os.unlink(check_name(name), dir_fd=self.fd)

    def sync(self) -> None:
        """fsync the directory, so the renames done in it survive a crash."""
        os.fsync(self.fd)


def is_single_regular_file(st: os.stat_result) -> bool:
    # A second hard link may be a file elsewhere that the app's user linked in here.
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1
