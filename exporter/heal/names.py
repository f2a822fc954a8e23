"""The names of the heal actions and what each acts on; import-free so the configuration can validate plans.

`section` is the configuration list whose target names an action accepts; `measures` is the collector
kind that re-measures the target after the action (None: the action's own result is its verification).
"""

from __future__ import annotations

from typing import Final, NamedTuple


class ActionInfo(NamedTuple):
    section: str
    measures: str | None


ACTIONS: Final[dict[str, ActionInfo]] = {
    "views.remove_orphans": ActionInfo("laravel", "views"),
    "views.recompile": ActionInfo("laravel", "views"),
    "views.fix_permissions": ActionInfo("laravel", "views"),
    "opcache.invalidate": ActionInfo("php_fpm", "opcache"),
    "opcache.reset": ActionInfo("php_fpm", "opcache"),
    "cache.warm": ActionInfo("laravel", None),
}
