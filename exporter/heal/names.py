"""The names of the heal actions and what each acts on; import-free so the configuration can validate plans.

`section` is the configuration list whose target names an action accepts; `measures` is the collector
kind that re-measures the target after the action (None: the action's own result is its verification);
`clears` names the metrics the action can bring down. A plan never runs a step that cannot change any
of the conditions it is meant to clear, and a condition that no step of a plan can clear ends the run
before any step (exporter.heal.runner).
"""

from __future__ import annotations

from typing import Final, NamedTuple

_P = "cachewarden_opcache_"
# What only a restart of FPM replaces: preloaded code (opcache_reset() cannot remove it).
RESTART_ONLY: Final = frozenset({f"{_P}preload_stale"})
# What lives in shared memory and goes with a reset (and with a restart).
_SHARED_MEMORY = frozenset({f"{_P}scripts_stale", f"{_P}scripts_suspect", f"{_P}scripts_missing",
                            f"{_P}scripts_outside_release", "cachewarden_code_revision_drift"})


class ActionInfo(NamedTuple):
    section: str
    measures: str | None
    clears: frozenset[str] = frozenset()


ACTIONS: Final[dict[str, ActionInfo]] = {
    "views.remove_orphans": ActionInfo("laravel", "views", frozenset({"cachewarden_views_orphaned"})),
    "views.recompile": ActionInfo("laravel", "views",
                                  frozenset({"cachewarden_views_stale", "cachewarden_views_uncompiled"})),
    "views.fix_permissions": ActionInfo("laravel", "views", frozenset({"cachewarden_views_dir_writable"})),
    # Drops scripts from shared memory and their file-cache entries; fails for a file that is gone.
    # Not scripts_outside_release: an invalidated script of the old release is no longer served, but
    # OPcache keeps listing it (measured on PHP 8.2) until a reset, as nothing requests its path again.
    "opcache.invalidate": ActionInfo("php_fpm", "opcache", frozenset({
        f"{_P}scripts_stale", f"{_P}scripts_suspect", "cachewarden_code_revision_drift",
        f"{_P}file_cache_stale", f"{_P}file_cache_suspect", f"{_P}file_cache_outside_release"})),
    # Empties shared memory only: the file cache and preloaded code stay.
    "opcache.reset": ActionInfo("php_fpm", "opcache", _SHARED_MEMORY),
    "opcache.purge_file_cache": ActionInfo("php_fpm", "opcache", frozenset({
        f"{_P}file_cache_stale", f"{_P}file_cache_suspect", f"{_P}file_cache_orphaned",
        f"{_P}file_cache_outside_release"})),
    "fpm.reload": ActionInfo("php_fpm", "opcache", _SHARED_MEMORY | RESTART_ONLY),
    "cache.warm": ActionInfo("laravel", None),
    # Rebuilds what is stale or half-written on disk, and invalidates what OPcache serves in an old version.
    "laravel.cache_rebuild": ActionInfo("laravel", "laravel_caches", frozenset({
        "cachewarden_laravel_cache_stale", "cachewarden_laravel_cache_unparsable",
        "cachewarden_laravel_config_keys_differing", "cachewarden_laravel_cache_served_stale"})),
}
