"""`views.recompile`: recompile stale and uncompiled views atomically, never clearing the cache first.

`php artisan view:clear`/`view:cache` would delete every compiled view before writing new ones, the
very window in which concurrent requests fail with `filemtime(): stat failed`. Instead Laravel's
Blade compiler, inside the app's FPM pool or with `heal.php_cli`, returns each compiled text
(exporter/heal/php/compile_views.php) and cachewarden writes it to a temporary file and renames it
into place, through the compiled directory pinned at start (the gate in
exporter/heal/actions/safety.py). PHP writes nothing: a path it resolved itself could be turned into
a symlink by the app's user between cachewarden's check and PHP's write. A view whose source cannot
be read or compiled fails alone and keeps its old compiled file. In the pool, the rewritten files are
then dropped from its OPcache.
"""

from __future__ import annotations

import asyncio
import binascii
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from exporter.collectors.base import Observation
from exporter.config import LaravelTarget, PhpFpmTarget
from exporter.fs.footer import read_footer
from exporter.fs.pinned import PinnedDirectory, is_single_regular_file
from exporter.heal.actions.base import Action, ActionError, ActionOutcome
from exporter.heal.actions.findings import view_findings
from exporter.heal.actions.safety import UnsafeTarget, looks_compiled, name_in
from exporter.heal.actions.views_permissions import owner_ids
from exporter.heal.phpexec import PhpError

SCRIPT = "compile_views.php"
COMPILE_TIMEOUT = 120.0  # per request
INVALIDATE_TIMEOUT = 30.0
# The compiled text comes back in the answer, base64 inside JSON: PHP holds each batch about three
# times over (text, base64, JSON) within its memory_limit (128 MB by default). Batches of at most
# this many source bytes (a compiled view is rarely twice its source) keep that near 30 MB; a
# larger single view is sent alone. Laravel's own compile needs far more per view than that (its
# footer code tokenises the whole compiled text: about 128 MB for 1 MB of dense Blade), so the
# batch never sets the limit. FastCGI splits the answer into records by itself.
BATCH_BYTES = 4 << 20
BATCH_VIEWS = 500
# Debian's php-laravel-framework; an app's own vendor/autoload.php is preferred when present, so the
# compiled file names follow the app's Laravel version.
DEBIAN_AUTOLOAD = ("/usr/share/php/Illuminate/View/autoload.php",
                   "/usr/share/php/Illuminate/Filesystem/autoload.php")

# The CLI has an OPcache of its own: a pool serving the app is told about rewritten files only when the
# compile runs inside it (php_fpm[].laravel), which is always preferred when such a pool is configured.
CLI_OPCACHE_NOTE = (
    "compiled with heal.php_cli: no php_fpm target is linked to this app, so a PHP-FPM pool running "
    "with opcache.validate_timestamps=0 may keep serving the old compiled views until it is reloaded "
    "or its OPcache reset"
)


def autoload_files(laravel: LaravelTarget) -> list[str]:
    vendor = laravel.root / "vendor" / "autoload.php"
    return [str(vendor)] if vendor.is_file() else list(DEBIAN_AUTOLOAD)


def app_bootstrap(laravel: LaravelTarget) -> str | None:
    """The app's bootstrap/app.php when it has its own vendor/ (blocking: stats files).

    Such an app may register Blade directives of its own, known only once it is booted; compiling its
    views with a bare compiler would write those directives out as text. So an app with vendor/ but
    no bootstrap/app.php is refused rather than compiled without them.
    """
    if not (laravel.root / "vendor" / "autoload.php").is_file():
        return None
    bootstrap = laravel.root / "bootstrap" / "app.php"
    if not bootstrap.is_file():
        raise ActionError(
            f"{laravel.root} has vendor/autoload.php but no bootstrap/app.php: the app's own Blade "
            "directives cannot be loaded, so its views are not compiled without them")
    return str(bootstrap)


def _as_laravel_named_it(d: PinnedDirectory, compiled: str, source: str) -> str:
    """The source path exactly as the compiled file's footer spells it, when it is the same file.

    Laravel names a compiled file after the path string it was given (through a symlinked release
    directory, say), not the resolved one; recompiling under the resolved path would write a second
    file under another name and leave the stale one in place. The footer is read through the pinned
    directory, never through a symlink planted in it.
    """
    name = name_in(d.path, compiled)
    if name is None:
        return source
    try:
        st = d.lstat(name)
        footer = read_footer(name, st.st_size, d.read_tail) if stat.S_ISREG(st.st_mode) else None
    except OSError:
        return source
    if footer and os.path.realpath(footer) == os.path.realpath(source):
        return footer
    return source


def views_to_compile(observation: Observation | None, d: PinnedDirectory) -> list[tuple[str, int]]:
    """Sources of stale and uncompiled views, deduplicated, in a stable order, with their sizes in
    bytes (0 when they cannot be stat'ed: PHP then reports why). Blocking: stats files."""
    findings = view_findings(observation)
    stale = [_as_laravel_named_it(d, v.compiled, v.source) for v in findings.stale]
    out = []
    for source in sorted(dict.fromkeys([*stale, *findings.uncompiled])):
        try:
            size = os.stat(source).st_size
        except OSError:
            size = 0
        out.append((source, size))
    return out


def batches(views: list[tuple[str, int]], max_bytes: int = BATCH_BYTES,
            max_views: int = BATCH_VIEWS) -> list[list[str]]:
    """`views` (source, size) in order, cut into runs of at most `max_bytes` and `max_views` each;
    a view larger than `max_bytes` makes a batch of its own."""
    out: list[list[str]] = []
    size = 0
    for source, n in views:
        if not out or size + n > max_bytes or len(out[-1]) >= max_views:
            out.append([])
            size = 0
        out[-1].append(source)
        size += n
    return out


@dataclass(frozen=True, slots=True)
class CompiledView:
    source: str
    name: str  # a compiled view's file name, checked
    data: bytes
    source_mtime: int | None


def compiled_views(result: Any, sources: list[str], outcome: ActionOutcome) -> list[CompiledView]:
    """The compiled views in a compile answer; an entry that is not one of ours is an error."""
    rows = result.get("compiled", []) if isinstance(result, dict) else []
    asked = set(sources)
    out = []
    for row in rows if isinstance(rows, list) else []:
        source = row.get("source") if isinstance(row, dict) else None
        name = row.get("name") if isinstance(row, dict) else None
        if not isinstance(source, str) or source not in asked:
            outcome.errors.append(f"the compile answered for a view not asked for: {str(source)[:200]!r}")
            continue
        if not isinstance(name, str) or not looks_compiled(name):
            outcome.errors.append(f"{source}: the compiler named it {str(name)[:200]!r}, not a compiled view")
            continue
        try:
            data = binascii.a2b_base64(str(row.get("contents", "")), strict_mode=True)
        except (binascii.Error, ValueError):
            outcome.errors.append(f"{source}: the compiled text did not arrive intact")
            continue
        mtime = row.get("source_mtime")
        out.append(CompiledView(source, name, data, mtime if isinstance(mtime, int) else None))
    return out


def compiled_mtime(source_mtime: int | None, now: float) -> float | None:
    """The mtime to give a compiled file (None: the time of writing).

    Laravel recompiles while filemtime(source) >= filemtime(compiled), with one-second resolution: a
    source saved in this very second would make every request recompile, non-atomically. A compiled
    mtime one second after the source's closes that window.
    """
    if source_mtime is not None and int(now) <= source_mtime < now + 60:
        return float(source_mtime + 1)
    return None


def metadata_for(d: PinnedDirectory, name: str, dir_st: os.stat_result, owner: tuple[int, int],
                 mode: int) -> tuple[int, int, int]:
    """(uid, gid, mode) for the file that replaces `name`, never read through a symlink.

    A regular file with one link keeps its owner and mode, so the app can still rewrite it. A new
    name, a symlink (whose target is another file, perhaps `nobody 0600`) or a file with other hard
    links gets the directory's rules: `heal.views_owner`, else the directory's owner, and
    `heal.views_mode`.
    """
    try:
        st: os.stat_result | None = d.lstat(name)
    except FileNotFoundError:
        st = None
    if st is not None and is_single_regular_file(st):
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
    uid, gid = owner
    return (dir_st.st_uid if uid == -1 else uid, dir_st.st_gid if gid == -1 else gid, mode)


def write_views(d: PinnedDirectory, views: list[CompiledView], owner: tuple[int, int], mode: int,
                outcome: ActionOutcome) -> list[str]:
    """Write each compiled view through the pinned directory; the paths written (blocking)."""
    try:
        d.verify()
    except UnsafeTarget as exc:
        outcome.errors.extend(f"{v.source}: not written: {exc}" for v in views)
        return []
    dir_st = d.stat()
    now = time.time()
    written = []
    for view in views:
        path = d.where(view.name)
        try:
            uid, gid, file_mode = metadata_for(d, view.name, dir_st, owner, mode)
            d.replace(view.name, view.data, uid=uid, gid=gid, mode=file_mode,
                      mtime=compiled_mtime(view.source_mtime, now))
        except OSError as exc:
            outcome.errors.append(f"{view.source}: cannot write {path}: {exc.strerror or exc}")
            continue
        outcome.done.append(f"compiled {view.source} -> {path}")
        written.append(path)
    if written:
        d.sync()
        try:
            d.verify()
        except UnsafeTarget as exc:
            # Written into the pinned directory all the same, wherever it now is: say it moved.
            outcome.errors.append(f"after writing: {exc}")
    return written


def _rows(result: Any, key: str) -> list[tuple[str, str]]:
    rows = result.get(key, []) if isinstance(result, dict) else []
    return [(str(r[0]), str(r[1])) for r in rows if isinstance(r, list) and len(r) == 2]


Compile = Callable[[dict[str, Any]], Awaitable[Any]]


class Recompile(Action):
    name = "views.recompile"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        laravel = self.laravel(target)
        # The gate first, whether or not there is anything to compile: a replaced directory is refused.
        d = await asyncio.to_thread(self.ctx.compiled.open, laravel)
        try:
            return await self._run(laravel, d, observation, dry_run)
        finally:
            d.close()

    async def _run(self, laravel: LaravelTarget, d: PinnedDirectory, observation: Observation | None,
                   dry_run: bool) -> ActionOutcome:
        outcome = ActionOutcome()
        views = []
        for source, size in await asyncio.to_thread(views_to_compile, observation, d):
            try:
                source.encode("utf-8")
            except UnicodeEncodeError:
                # JSON carries text only: PHP would not even see the request's token.
                # Kept as it is: every sink renders it (`\xff`, exporter.text), JSON with its bytes.
                outcome.refused.append(f"{source}: its path is not valid UTF-8, so it cannot be sent to PHP")
                continue
            views.append((source, size))
        if not views:
            return outcome
        bootstrap = await asyncio.to_thread(app_bootstrap, laravel)
        views_dir = await asyncio.to_thread(os.path.realpath, laravel.views_dir)
        compile_, pool = self._php(laravel)
        heal = self.ctx.config.heal
        owner = owner_ids(heal.views_owner)
        args: dict[str, Any] = {
            "autoload": autoload_files(laravel),
            **({"bootstrap": bootstrap} if bootstrap else {}),
            "views_dir": views_dir,
            "compiled_dir": str(d.path),
            "dry_run": dry_run,
        }
        written: list[str] = []
        php_errors: list[str] = []
        parts = batches(views)
        for sources in parts:
            try:
                result = await compile_({**args, "views": sources})
            except PhpError as exc:
                php_errors.append(str(exc))
                outcome.errors.extend(f"{s}: not compiled: {exc}" for s in sources)
                continue
            outcome.refused.extend(f"{s}: {why}" for s, why in _rows(result, "refused"))
            outcome.errors.extend(f"{s}: {why}" for s, why in _rows(result, "failed"))
            compiled = compiled_views(result, sources, outcome)
            if dry_run:
                outcome.done.extend(f"would compile {v.source} -> {d.where(v.name)}" for v in compiled)
            else:
                written += await asyncio.to_thread(write_views, d, compiled, owner, heal.views_mode, outcome)
        if len(php_errors) == len(parts):
            raise ActionError(php_errors[0])
        if written and pool is not None:
            await self._invalidate(pool, written, outcome)
        elif written:
            outcome.notes.append(CLI_OPCACHE_NOTE)
        return outcome

    def _php(self, laravel: LaravelTarget) -> tuple[Compile, PhpFpmTarget | None]:
        """How to run the compile script, and the pool it runs in (None: the CLI)."""
        php = self.ctx.php
        pool = php.pool_for_app(laravel.name)
        if pool is not None:
            return (lambda args: php.in_fpm(pool, SCRIPT, args, COMPILE_TIMEOUT)), pool
        if self.ctx.config.heal.php_cli is not None:
            # As the app's PHP user when cachewarden runs as root and it is configured: the compile
            # runs the app's own code and reads its views, which needs no more than the app may do.
            account = laravel.php_user if os.geteuid() == 0 else None
            return (lambda args: php.in_cli(SCRIPT, args, COMPILE_TIMEOUT, account)), None
        raise ActionError(
            f"no PHP to compile views of {laravel.name!r} with: link a php_fpm target "
            "(php_fpm[].laravel) or set heal.php_cli"
        )

    async def _invalidate(self, pool: PhpFpmTarget, paths: list[str], outcome: ActionOutcome) -> None:
        """Drop the rewritten files from the pool's OPcache, by the path the pool resolves them to."""
        try:
            result = await self.ctx.php.in_fpm(pool, SCRIPT, {"op": "invalidate", "paths": paths},
                                               INVALIDATE_TIMEOUT)
        except PhpError as exc:
            outcome.errors.append(f"the rewritten views were not dropped from the OPcache of pool "
                                  f"{pool.name}: {exc}")
            return
        failed = result.get("failed", []) if isinstance(result, dict) else paths
        if failed:
            outcome.errors.append(f"{len(failed)} rewritten views were not dropped from the OPcache of pool "
                                  f"{pool.name} (opcache_invalidate failed): it may serve their old versions")
