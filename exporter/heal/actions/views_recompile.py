"""`views.recompile`: recompile stale and uncompiled views atomically, never clearing the cache first.

`php artisan view:clear`/`view:cache` would delete every compiled view before writing new ones, the
very window in which concurrent requests fail with `filemtime(): stat failed`. Instead each view is
compiled by Laravel's Blade compiler to a temporary file in the compiled directory and renamed into
place (exporter/heal/php/compile_views.php), inside the app's FPM pool or with `heal.php_cli`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from exporter.collectors.base import Observation
from exporter.config import LaravelTarget
from exporter.fs.footer import read_footer
from exporter.heal.actions.base import Action, ActionError, ActionOutcome
from exporter.heal.actions.findings import view_findings
from exporter.heal.phpexec import PhpError

SCRIPT = "compile_views.php"
COMPILE_TIMEOUT = 120.0
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


def _as_laravel_named_it(compiled: str, source: str) -> str:
    """The source path exactly as the compiled file's footer spells it, when it is the same file.

    Laravel names a compiled file after the path string it was given (through a symlinked release
    directory, say), not the resolved one; recompiling under the resolved path would write a second
    file under another name and leave the stale one in place.
    """
    try:
        footer = read_footer(compiled, os.stat(compiled).st_size)
    except OSError:
        return source
    if footer and os.path.realpath(footer) == os.path.realpath(source):
        return footer
    return source


def views_to_compile(observation: Observation | None) -> list[str]:
    """Sources of stale and uncompiled views, deduplicated, in a stable order (blocking: stats files)."""
    findings = view_findings(observation)
    stale = [_as_laravel_named_it(compiled, source) for compiled, source in findings.stale]
    return sorted(dict.fromkeys(stale + findings.uncompiled))


class Recompile(Action):
    name = "views.recompile"

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        laravel = self.laravel(target)
        root = await asyncio.to_thread(self.ctx.compiled.root, laravel)
        views_dir = await asyncio.to_thread(os.path.realpath, laravel.views_dir)
        views = await asyncio.to_thread(views_to_compile, observation)
        outcome = ActionOutcome()
        if not views:
            return outcome
        bootstrap = await asyncio.to_thread(app_bootstrap, laravel)
        args: dict[str, Any] = {
            "autoload": autoload_files(laravel),
            **({"bootstrap": bootstrap} if bootstrap else {}),
            "views_dir": views_dir,
            "compiled_dir": str(root),
            "views": views,
            "dry_run": dry_run,
        }
        result, in_fpm = await self._compile(laravel, args)
        verb = "would compile" if dry_run else "compiled"
        for source, compiled in _rows(result, "compiled"):
            if Path(compiled).parent != root:  # the script checks this too; a mismatch is a bug, not a fix
                outcome.errors.append(f"{source}: compiled outside {root}")
            else:
                outcome.done.append(f"{verb} {source} -> {compiled}")
        outcome.refused.extend(f"{s}: {why}" for s, why in _rows(result, "refused"))
        outcome.errors.extend(f"{s}: {why}" for s, why in _rows(result, "failed"))
        if outcome.done and not in_fpm and not dry_run:
            outcome.notes.append(CLI_OPCACHE_NOTE)
        return outcome

    async def _compile(self, laravel: LaravelTarget, args: dict[str, Any]) -> tuple[Any, bool]:
        """The script's result, and whether it ran inside the app's pool (whose OPcache it then updated)."""
        php = self.ctx.php
        pool = php.pool_for_app(laravel.name)
        try:
            if pool is not None:
                return await php.in_fpm(pool, SCRIPT, args, COMPILE_TIMEOUT), True
            if self.ctx.config.heal.php_cli is not None:
                return await php.in_cli(SCRIPT, args, COMPILE_TIMEOUT), False
        except PhpError as exc:
            raise ActionError(str(exc)) from None
        raise ActionError(
            f"no PHP to compile views of {laravel.name!r} with: link a php_fpm target "
            "(php_fpm[].laravel) or set heal.php_cli"
        )


def _rows(result: Any, key: str) -> list[tuple[str, str]]:
    rows = result.get(key, []) if isinstance(result, dict) else []
    return [(str(r[0]), str(r[1])) for r in rows if isinstance(r, list) and len(r) == 2]
