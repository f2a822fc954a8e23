"""The names of the heal actions and what each acts on (the configuration validates plans against it).

`section` is the configuration list whose target names an action accepts; `measures` is the collector
kind that re-measures the target after the action (None: the action's own result is its verification);
`clears` names the metrics the action can bring down. A plan never runs a step that cannot change any
of the conditions it is meant to clear, and a condition that no step of a plan can clear ends the run
before any step (exporter.heal.runner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

from exporter.collectors.laravel_caches import (
    CACHE_SERVED_STALE,
    CACHE_STALE,
    CACHE_UNPARSABLE,
    CONFIG_KEYS_DIFFERING,
)
from exporter.collectors.opcache import (
    CODE_REVISION_DRIFT,
    OPCACHE_SCRIPTS_MISSING,
    OPCACHE_SCRIPTS_OUTSIDE_RELEASE,
    OPCACHE_SCRIPTS_STALE,
    OPCACHE_SCRIPTS_SUSPECT,
)
from exporter.collectors.opcache_file_cache import (
    FILE_CACHE_ORPHANED,
    FILE_CACHE_OUTSIDE_RELEASE,
    FILE_CACHE_STALE,
    FILE_CACHE_SUSPECT,
)
from exporter.collectors.opcache_preload import PRELOAD_STALE
from exporter.collectors.views import VIEWS_DIR_WRITABLE, VIEWS_ORPHANED, VIEWS_STALE, VIEWS_UNCOMPILED
from exporter.metrics import MetricSpec


def _names(*specs: MetricSpec) -> frozenset[str]:
    return frozenset(s.name for s in specs)


# What only a restart of FPM replaces: preloaded code (opcache_reset() cannot remove it).
RESTART_ONLY: Final = _names(PRELOAD_STALE)
# What lives in shared memory and goes with a reset (and with a restart).
_SHARED_MEMORY = _names(OPCACHE_SCRIPTS_STALE, OPCACHE_SCRIPTS_SUSPECT, OPCACHE_SCRIPTS_MISSING,
                        OPCACHE_SCRIPTS_OUTSIDE_RELEASE, CODE_REVISION_DRIFT)


class ActionInfo(NamedTuple):
    section: str
    measures: str | None
    clears: frozenset[str] = frozenset()


ACTIONS: Final[dict[str, ActionInfo]] = {
    "views.remove_orphans": ActionInfo("laravel", "views", _names(VIEWS_ORPHANED)),
    "views.recompile": ActionInfo("laravel", "views", _names(VIEWS_STALE, VIEWS_UNCOMPILED)),
    "views.fix_permissions": ActionInfo("laravel", "views", _names(VIEWS_DIR_WRITABLE)),
    # Drops scripts from shared memory and their file-cache entries; fails for a file that is gone.
    # Not scripts_outside_release: an invalidated script of the old release is no longer served, but
    # OPcache keeps listing it (measured on PHP 8.2) until a reset, as nothing requests its path again.
    "opcache.invalidate": ActionInfo("php_fpm", "opcache", _names(
        OPCACHE_SCRIPTS_STALE, OPCACHE_SCRIPTS_SUSPECT, CODE_REVISION_DRIFT,
        FILE_CACHE_STALE, FILE_CACHE_SUSPECT, FILE_CACHE_OUTSIDE_RELEASE)),
    # Empties shared memory only: the file cache and preloaded code stay.
    "opcache.reset": ActionInfo("php_fpm", "opcache", _SHARED_MEMORY),
    "opcache.purge_file_cache": ActionInfo("php_fpm", "opcache", _names(
        FILE_CACHE_STALE, FILE_CACHE_SUSPECT, FILE_CACHE_ORPHANED, FILE_CACHE_OUTSIDE_RELEASE)),
    "fpm.reload": ActionInfo("php_fpm", "opcache", _SHARED_MEMORY | RESTART_ONLY),
    "cache.warm": ActionInfo("laravel", None),
    # Rebuilds what is stale or half-written on disk, and invalidates what OPcache serves in an old version.
    "laravel.cache_rebuild": ActionInfo("laravel", "laravel_caches", _names(
        CACHE_STALE, CACHE_UNPARSABLE, CONFIG_KEYS_DIFFERING, CACHE_SERVED_STALE)),
}

# The arguments an action takes and the values each allows (`POST /heal?...&cache=routes`, `cachewarden
# heal --cache routes`, a plan's `args`); an action not listed takes none. Absent, an argument means
# what the action does without it: laravel.cache_rebuild's `cache=all` rebuilds what was measured stale.
# `packages` also rewrites services.php: one artisan command (package:discover) writes both.
PARAMETERS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "laravel.cache_rebuild": {"cache": ("config", "routes", "events", "packages", "all")},
}


def check_args(action: str, args: Mapping[str, str]) -> None:
    """ValueError naming the first argument `action` does not take, or whose value it does not allow."""
    takes = PARAMETERS.get(action, {})
    for name, value in args.items():
        if name not in takes:
            raise ValueError(f"{action} takes no argument {name!r}"
                             + (f"; it takes {', '.join(sorted(takes))}" if takes else ""))
        if value not in takes[name]:
            raise ValueError(f"{action} {name}={value[:64]!r}: give one of {', '.join(takes[name])}")


def operation(step: str, args: Mapping[str, str]) -> str:
    """A step with the arguments it takes, as it is locked and cools down: laravel.cache_rebuild[cache=
    routes] beside or right after laravel.cache_rebuild[cache=config] is another operation, not the same
    one twice or in a loop, so two bootstrap-cache alerts firing together are both healed at once (each
    rebuild writes its own files, each renamed into place whole)."""
    taken = sorted((k, v) for k, v in args.items() if k in PARAMETERS.get(step, {}))
    return f"{step}[{','.join(f'{k}={v}' for k, v in taken)}]" if taken else step
