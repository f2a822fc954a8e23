"""`opcache.purge_file_cache`: delete stale, orphaned or other-release entries of OPcache's file cache,
and nothing else; and the entry checks `opcache.invalidate` verifies its work with.

The guards are those of compiled-view deletion (exporter/heal/actions/safety.py): the directory is the
one the fresh measurement resolved (`opcache.file_cache` as FPM reports it), refused when it is
top-level or holds an app, agent_dir or the views; it is opened once and everything happens through
descriptors from it, each component opened with O_NOFOLLOW, so a symlink anywhere below it is never
followed. Only a regular `*.bin` file with a single link, below a system-id folder, whose source path
has no `.` or `..` component, is deleted, and only after its reason is checked again on disk right
before the unlink (its source still gone, or still newer than the entry). A hard-linked entry may be
a file from elsewhere linked in by whoever can write there: it is left alone.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import replace
from pathlib import Path

from exporter.collectors.base import Observation
from exporter.collectors.opcache_preload import resolve_release
from exporter.config import Config
from exporter.findings import FileCacheFindings
from exporter.fs.opcache_file_cache import DIR_FLAGS, NS_PER_S, SYSTEM_ID, entry_relpath
from exporter.fs.pinned import ForeignSymlink, is_single_regular_file, open_directory
from exporter.heal.actions.base import Action, ActionOutcome
from exporter.heal.actions.findings import opcache_findings
from exporter.heal.actions.safety import UnsafeTarget


def file_cache_findings(observation: Observation | None) -> FileCacheFindings | None:
    """The collector's file-cache findings, when there is a complete scan of a known folder."""
    fc = opcache_findings(observation).file_cache
    return fc if fc is not None and fc.complete else None


def check_file_cache_dir(directory: str, config: Config) -> Path:
    """The directory, resolved, or UnsafeTarget saying why nothing in it may be deleted."""
    configured = Path(directory)
    if not configured.is_absolute():
        raise UnsafeTarget(f"opcache.file_cache={directory} is not an absolute path; refusing to modify it")
    root = Path(os.path.realpath(configured))
    if len(root.parts) < 3:
        raise UnsafeTarget(f"the file cache {root} is a top-level directory; refusing to modify it")
    others = [t.root for t in config.laravel] + [t.views_dir for t in config.laravel]
    others += [t.agent_dir for t in config.php_fpm]
    for other in others:
        real = Path(os.path.realpath(other))
        if root == real or root in real.parents:
            raise UnsafeTarget(f"the file cache {root} contains {real}; refusing to modify it")
    return root


class EntryDir:
    """The file cache's system-id folder, opened once; entries are reached by O_NOFOLLOW steps from it.

    The file cache is reached from `/` by the path FPM reports (`configured`), following only
    symlinks root owns (exporter.fs.pinned.open_directory): FPM's user writes there, and may own the
    directory itself, so a link it swapped in, before or after the measurement, is refused rather
    than resolved; and what is reached must be the directory `root` that was measured.
    """

    def __init__(self, root: Path | str, system_id: str, configured: str | None = None) -> None:
        if not SYSTEM_ID.fullmatch(system_id):
            raise UnsafeTarget(f"{system_id!r} is not an OPcache system id; refusing to modify it")
        try:
            top = open_directory(configured or root)
        except ForeignSymlink as exc:
            raise UnsafeTarget(f"the file cache {configured or root}: {exc.strerror} ({exc.filename}); "
                               "refusing to modify it") from None
        try:
            opened, measured = os.fstat(top), os.stat(root, follow_symlinks=False)
            if (opened.st_dev, opened.st_ino) != (measured.st_dev, measured.st_ino):
                raise UnsafeTarget(f"the file cache {configured or root} no longer leads to {root} as "
                                   "measured; refusing to modify it")
            self.fd = os.open(system_id, DIR_FLAGS, dir_fd=top)
        finally:
            os.close(top)
        self.base = f"{root}/{system_id}"

    def close(self) -> None:
        os.close(self.fd)

    def parent(self, rel: str) -> tuple[int, str]:
        """A descriptor of the entry's directory (the caller closes it) and the entry's name.

        Raises OSError: ELOOP for a symlinked component, ENOENT when a folder is gone."""
        *dirs, name = rel.split("/")
        fd = os.dup(self.fd)
        try:
            for part in dirs:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, name


def entry_state(entries: EntryDir, source: str) -> str | None:
    """How the entry of `source` is now: None if it is gone, else "fresh", "stale" or "suspect"
    (against the source's times), "orphaned", or why it is no entry ("refused: …")."""
    rel = entry_relpath(source)
    if rel is None:
        return "refused: not an absolute path without . or .. components"
    try:
        fd, name = entries.parent(rel)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"refused: {exc.strerror or exc} on the way to it (a symlink is never followed)"
    try:
        st = os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)
    return _judge(source, st)


def _judge(source: str, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "refused: a symlink"
    if not is_single_regular_file(st):
        return "refused: not a regular file with a single link"
    written = st.st_mtime_ns // NS_PER_S
    try:
        src = os.stat(source)
    except (FileNotFoundError, NotADirectoryError):
        return "orphaned"
    if src.st_mtime_ns // NS_PER_S > written:
        return "stale"
    if src.st_ctime_ns // NS_PER_S > written:
        return "suspect"
    return "fresh"


def _still(reason: str, state: str, source: str, release_dir: str | None) -> bool:
    if reason == "outside_release":
        if state.startswith("refused") or release_dir is None:
            return False
        releases = release_dir.rstrip("/").rsplit("/", 1)[0] + "/"
        return source.startswith(releases) and not source.startswith(release_dir.rstrip("/") + "/")
    return state == reason


def purge(root: Path, findings: FileCacheFindings, dry_run: bool) -> ActionOutcome:
    """Delete the entries the findings name that still qualify (blocking)."""
    outcome = ActionOutcome()
    entries = EntryDir(root, findings.system_id, findings.configured)
    try:
        for reason, sources in findings.by_reason.items():
            for source in sources:
                _purge_one(entries, reason, source, findings.release_dir, dry_run, outcome)
    finally:
        entries.close()
    return outcome


def _purge_one(entries: EntryDir, reason: str, source: str, release_dir: str | None, dry_run: bool,
               outcome: ActionOutcome) -> None:
    rel = entry_relpath(source)
    if rel is None:
        outcome.refused.append(f"{source}: not an absolute path without . or .. components")
        return
    path = f"{entries.base}/{rel}"
    try:
        fd, name = entries.parent(rel)
    except FileNotFoundError:
        return  # already gone
    except OSError as exc:
        outcome.refused.append(f"{path}: {exc.strerror or exc} on the way to it (never followed)")
        return
    try:
        try:
            st = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            return
        state = _judge(source, st)
        if state.startswith("refused"):
            outcome.refused.append(f"{path}: {state.removeprefix('refused: ')}")
            return
        if not _still(reason, state, source, release_dir):
            outcome.refused.append(f"{path}: no longer {reason} ({state})")
            return
        if dry_run:
            outcome.done.append(f"would delete {path} ({reason})")
            return
        try:
            os.unlink(name, dir_fd=fd)
            outcome.done.append(f"deleted {path} ({reason})")
        except FileNotFoundError:
            pass
        except OSError as exc:
            outcome.errors.append(f"{path}: {exc.strerror}")
    finally:
        os.close(fd)


class PurgeFileCache(Action):
    name = "opcache.purge_file_cache"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        pool = self.php_fpm(target)
        findings = file_cache_findings(observation)
        if findings is None:
            outcome = ActionOutcome()
            outcome.refused.append("no complete measurement of opcache.file_cache for this pool "
                                   "(not set, or not readable by cachewarden): nothing is deleted")
            return outcome
        # "Another release" is judged against where `current` points now, not at the measurement.
        release = None
        if pool.release_symlink is not None:
            release = (await asyncio.to_thread(resolve_release, pool.release_symlink)).directory
        findings = replace(findings, release_dir=release)
        root = await asyncio.to_thread(check_file_cache_dir, findings.directory, self.ctx.config)
        if str(root) != findings.directory:
            raise UnsafeTarget(f"the file cache now resolves to {root}, not {findings.directory} as "
                               "measured; refusing to modify it")
        return await asyncio.to_thread(purge, root, findings, dry_run)
