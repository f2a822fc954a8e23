"""`laravel.cache_rebuild`: rebuild the stale or half-written bootstrap caches of one app, atomically.

Laravel's own `config:cache` (and `route:cache`, `event:cache`) first deletes the cache and then writes
the new one with a plain `file_put_contents`: under traffic that is a moment with no cache (requests
boot with the uncached config) and a moment with a half-written one (requests fail). So each cache is
built by the app's own artisan command into a temporary file in the cache's own directory (the
`APP_*_CACHE` variable points artisan there); its bytes are read through the directory's descriptor,
validated (they parse; config, events, services and packages return an array) and written, those very
bytes, under a temporary name then `rename()`d over the file Laravel reads, with the old file's owner
and mode (exporter.fs.pinned's `replace`): a request sees the old complete file or the new complete
one. Then, inside the app's FPM pool, `opcache_invalidate` drops the
old copy, which with `opcache.validate_timestamps=0` would otherwise be served until a restart.

Which caches: the argument `cache` (exporter.heal.names.PARAMETERS) names them. `all`, or no argument:
those the fresh measurement found stale or unparsable. `config`, `routes`, `events` or `packages`: that
one, stale or not (a person or a plan asked for it). Never one that is absent (an app that runs without
a route cache must not get one). `packages.php` and `services.php` are built by the same boot
(`package:discover`), so either one rebuilds both. Several are rebuilt config first.

Artisan runs with `heal.php_cli` as the app's user (`laravel[].php_user`: the account rules and the
scrubbed environment of `cache.warm`, exporter.heal.child_process), in the app root, without a shell.
Its output is not recorded: the app prints what it likes, secrets included.

Files are only ever read and written through a descriptor of the cache directory (exporter.fs.pinned:
opened one component at a time without following a symlink root does not own, and checked against the
directory resolved before artisan ran); a cache directory outside the app root, or reached through a
symlink below it, is refused (the path rules of exporter.heal.actions.safety). Nothing is deleted but
the temporary files of the rebuild.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.collectors.base import Observation
from exporter.config import LaravelTarget
from exporter.findings import LaravelCacheFindings
from exporter.fs.bootstrap_caches import CACHE_VARIABLES
from exporter.fs.pinned import TMP_MARK, PinnedDirectory, is_single_regular_file
from exporter.heal.actions.base import Action, ActionError, ActionOutcome
from exporter.heal.actions.safety import (
    PinnedDir,
    UnsafeTarget,
    open_pinned,
    still_pinned,
    symlinked_component,
)
from exporter.heal.child_process import AccountError, spawn_options
from exporter.heal.phpexec import PhpError

ARTISAN_TIMEOUT = 120.0
VALIDATE_TIMEOUT = 30.0
AGENT_TIMEOUT = 30.0
MAX_CACHE_BYTES = 256 << 20  # far above any real cache; a file growing without end is not read whole


@dataclass(frozen=True, slots=True)
class Unit:
    """One artisan run and the caches it writes."""

    command: str
    caches: tuple[str, ...]


# In the order they are rebuilt: routes and events are built by a booted app, which reads the config
# cache, so the config comes first.
UNITS = (
    Unit("config:cache", ("config",)),
    Unit("route:cache", ("routes",)),
    Unit("event:cache", ("events",)),
    Unit("package:discover", ("packages", "services")),
)
RETURNS_ARRAY = {"config": True, "routes": False, "events": True, "packages": True, "services": True}
ALL = "all"  # the value of `cache` that rebuilds what was measured stale or unparsable
# The cache files each other value of `cache` names.
NAMED = {"config": ("config",), "routes": ("routes",), "events": ("events",),
         "packages": ("packages", "services")}


def _findings(observation: Observation | None) -> LaravelCacheFindings:
    found = observation.findings if observation else None
    return found if isinstance(found, LaravelCacheFindings) else LaravelCacheFindings()


def caches_to_rebuild(observation: Observation | None) -> list[str]:
    """The caches the measurement found present and stale or unparsable, in rebuild order."""
    caches = _findings(observation).caches
    wanted = {c for c, b in caches.items() if b.present and (b.stale or b.unparsable)}
    return [c for unit in UNITS for c in unit.caches if c in wanted or wanted & set(unit.caches)]


def named_caches(observation: Observation | None, cache: str) -> tuple[list[str], list[str]]:
    """The caches `cache` names that the measurement found present, with every cache their artisan
    command writes too, in rebuild order; or, when none of them is present, their paths."""
    measured = _findings(observation).caches
    entries = {c: measured[c] for c in NAMED[cache] if c in measured}
    wanted = {c for c, b in entries.items() if b.present}
    absent = [] if wanted else [b.path for b in entries.values()]
    return [c for unit in UNITS for c in unit.caches if wanted & set(unit.caches)], absent


def served_stale(observation: Observation | None) -> list[tuple[str, str]]:
    """(cache, path) of the cache files OPcache serves in an older version than the file on disk."""
    found = _findings(observation)
    return [(c, found.caches[c].path) for c in found.served_stale if c in found.caches]


def cache_dir(laravel: LaravelTarget, path: Path) -> PinnedDir:
    """The resolved directory of one cache file, pinned; UnsafeTarget unless it is inside the app root
    with no symlink on the way (APP_*_CACHE comes from the app's .env, which the app's user can edit)."""
    if path.name in ("", ".", ".."):
        raise UnsafeTarget(f"{path} does not name a file")
    root = Path(os.path.normpath(laravel.root))
    directory = Path(os.path.normpath(path.parent))
    if root != directory and root not in directory.parents:
        raise UnsafeTarget(f"the cache directory {directory} lies outside the app root {root}; refusing to "
                           "write there")
    link = symlinked_component(directory, root)
    if link is not None:
        raise UnsafeTarget(f"{link} is a symlink on the way to the cache directory; refusing to follow it")
    st = os.stat(directory)
    return PinnedDir(Path(os.path.realpath(directory)), st.st_dev, st.st_ino)


def open_cache_dir(pinned: PinnedDir) -> PinnedDirectory:
    """The pinned cache directory, opened one component at a time (exporter.fs.pinned) and verified to
    be that very inode; every read and write of the rebuild goes through it. The caller closes it."""
    return PinnedDirectory(open_pinned(pinned, "cache directory"), pinned.path,
                           lambda: still_pinned(pinned, "cache directory"))


def read_built(directory: PinnedDirectory, name: str) -> tuple[bytes, os.stat_result] | str:
    """What artisan wrote at `name` and its stat, read through the descriptor (the app's user could
    change the file later: only these bytes are validated and written); or why it cannot be used."""
    try:
        st = directory.lstat(name)
    except FileNotFoundError:
        return "was not written"
    if not is_single_regular_file(st):
        return "is not a regular file with a single link"
    if st.st_size > MAX_CACHE_BYTES:
        return f"is larger than {MAX_CACHE_BYTES} bytes"
    fd = directory.open(name)
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            return "was replaced while it was opened"
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_CACHE_BYTES:
                return f"is larger than {MAX_CACHE_BYTES} bytes"
    finally:
        os.close(fd)
    return b"".join(chunks), opened


def _replaceable(directory: PinnedDirectory, name: str) -> os.stat_result | str | None:
    """The cache in place (None when there is none), or why it must not be replaced."""
    try:
        st = directory.lstat(name)
    except FileNotFoundError:
        return None
    if not is_single_regular_file(st):
        return "the cache in place is not a regular file with a single link"
    return st


class CacheRebuild(Action):
    name = "laravel.cache_rebuild"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        return await self.run_with(target, observation, dry_run, {})

    def explicit(self, args: Mapping[str, str]) -> bool:
        return args.get("cache", ALL) != ALL

    async def run_with(self, target: str, observation: Observation | None, dry_run: bool,
                       args: Mapping[str, str]) -> ActionOutcome:
        laravel = self.laravel(target)
        outcome = ActionOutcome()
        cache = args.get("cache", ALL)
        served = served_stale(observation)
        if cache == ALL:
            wanted = caches_to_rebuild(observation)
        else:
            if observation is None:
                raise ActionError(f"the bootstrap caches of {target!r} were not measured: where the {cache} "
                                  "cache lives is not known")
            wanted, absent = named_caches(observation, cache)
            outcome.refused.extend(f"{cache}: there is no cache at {p}; an app that runs without one is "
                                   "not given one" for p in absent)
            served = [(c, p) for c, p in served if c in NAMED[cache]]
        served_only = [p for c, p in served if c not in wanted]
        if not wanted:
            if served_only and not dry_run:
                await self._invalidate(laravel, served_only, outcome)
            else:
                outcome.done.extend(f"would invalidate {p}" for p in served_only)
            return outcome
        measured = _findings(observation).caches
        paths = {c: Path(measured[c].path) for c in wanted}
        php = self.ctx.config.heal.php_cli
        if php is None:
            raise ActionError("heal.php_cli is not configured: artisan needs the php CLI to rebuild caches")
        artisan = laravel.root / "artisan"
        if not await asyncio.to_thread(artisan.is_file):
            raise ActionError(f"{artisan} does not exist")
        rebuilt: list[str] = []
        for unit in UNITS:
            caches = [c for c in unit.caches if c in wanted]
            if not caches:
                continue
            if dry_run:
                outcome.done.extend(f"would rebuild {c} ({paths[c]}) with artisan {unit.command}, "
                                    "then rename it into place" for c in caches)
                continue
            rebuilt += await self._rebuild(laravel, str(php), str(artisan), unit, caches, paths, outcome)
        if dry_run:
            outcome.done.extend(f"would invalidate {p}" for p in served_only)
        elif rebuilt or served_only:
            await self._invalidate(laravel, rebuilt + served_only, outcome)
        return outcome

    async def _rebuild(self, laravel: LaravelTarget, php: str, artisan: str, unit: Unit, caches: list[str],
                       paths: dict[str, Path], outcome: ActionOutcome) -> list[str]:
        try:
            pinned = {c: await asyncio.to_thread(cache_dir, laravel, paths[c]) for c in caches}
        except (UnsafeTarget, OSError) as exc:
            outcome.refused.append(f"{', '.join(caches)}: {exc}")
            return []
        suffix = f"{TMP_MARK}{secrets.token_hex(8)}.php"
        tmp = {c: f".{paths[c].name}{suffix}" for c in caches}
        try:
            options = spawn_options(self.ctx.config, laravel.php_user)
        except AccountError as exc:
            outcome.errors.append(f"{', '.join(caches)}: {exc}")
            return []
        env = options["env"]
        for c in caches:
            env[CACHE_VARIABLES[c][0]] = str(pinned[c].path / tmp[c])
        dirs: dict[str, PinnedDirectory] = {}
        try:
            for c in caches:
                dirs[c] = await asyncio.to_thread(open_cache_dir, pinned[c])
            code = await self._artisan(php, artisan, unit.command, str(laravel.root), options)
            if code is not None:
                outcome.errors.append(f"{', '.join(caches)}: artisan {unit.command} {code}")
                return []
            built: dict[str, tuple[bytes, os.stat_result, os.stat_result | None]] = {}
            for c in caches:
                got = await asyncio.to_thread(read_built, dirs[c], tmp[c])
                if isinstance(got, str):
                    outcome.errors.append(f"{c}: artisan {unit.command}: the new cache {got}")
                    return []
                verdict = await self._validate(laravel, got[0], c)
                if verdict is not None:
                    outcome.errors.append(f"{c}: the new cache {verdict}; the old one is left in place")
                    return []
                old = await asyncio.to_thread(_replaceable, dirs[c], paths[c].name)
                if isinstance(old, str):
                    outcome.refused.append(f"{c}: {paths[c]}: {old}")
                    return []
                built[c] = (got[0], got[1], old)
            done = []
            for c in caches:
                data, new, old = built[c]
                owner = old or new  # the app's file keeps its owner and mode; a first one, artisan's
                await asyncio.to_thread(self._write, dirs[c], paths[c].name, data, owner)
                final = dirs[c].where(paths[c].name)
                outcome.done.append(f"rebuilt {c}: {final} (artisan {unit.command}, renamed into place)")
                done.append(final)
            return done
        finally:
            for c, directory in dirs.items():
                with contextlib.suppress(OSError):
                    directory.unlink(tmp[c])
                directory.close()

    @staticmethod
    def _write(directory: PinnedDirectory, name: str, data: bytes, owner: os.stat_result) -> None:
        directory.verify()
        directory.replace(name, data, uid=owner.st_uid, gid=owner.st_gid, mode=owner.st_mode)
        directory.sync()

    async def _artisan(self, php: str, artisan: str, command: str, cwd: str,
                       options: dict[str, Any]) -> str | None:
        """None on success, else what went wrong (exit status or timeout)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                php, artisan, command, "--no-interaction", cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, **options)
        except OSError as exc:
            return f"cannot start ({exc.strerror})"
        try:
            async with asyncio.timeout(ARTISAN_TIMEOUT):
                code = await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return f"killed after {ARTISAN_TIMEOUT:g}s"
        return None if code == 0 else f"exit {code}"

    async def _validate(self, laravel: LaravelTarget, data: bytes, cache: str) -> str | None:
        args = {"code": base64.b64encode(data).decode(), "returns_array": RETURNS_ARRAY[cache]}
        try:
            result = await self.ctx.php.in_cli("validate_bootstrap_cache.php", args, VALIDATE_TIMEOUT,
                                               account=laravel.php_user)
        except PhpError as exc:
            return f"could not be validated ({exc})"
        if not isinstance(result, dict) or result.get("ok") is not True:
            reason = result.get("reason") if isinstance(result, dict) else None
            return str(reason or "failed validation")
        return None

    async def _invalidate(self, laravel: LaravelTarget, paths: list[str], outcome: ActionOutcome) -> None:
        pool = self.ctx.php.pool_for_app(laravel.name)
        if pool is None:
            outcome.notes.append("no php_fpm target is linked to this app: a pool running with "
                                 "opcache.validate_timestamps=0 keeps serving the old caches until it is "
                                 "reloaded or its OPcache reset")
            return
        try:
            result = await self.ctx.php.agent_action(pool, "invalidate", {"paths": paths}, AGENT_TIMEOUT)
        except PhpError as exc:
            outcome.errors.append(f"opcache_invalidate in pool {pool.name}: {exc}")
            return
        failed = result.get("failed", []) if isinstance(result, dict) else paths
        outcome.done.extend(f"invalidated {p} in pool {pool.name}" for p in paths if p not in failed)
        outcome.errors.extend(f"{p}: opcache_invalidate failed in pool {pool.name}" for p in failed)
