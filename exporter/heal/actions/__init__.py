"""The heal actions, one module per family, and the registry that names them."""

from __future__ import annotations

from exporter.heal.actions.base import Action, ActionContext
from exporter.heal.actions.cache_warm import Warm
from exporter.heal.actions.fpm_reload import FpmReload
from exporter.heal.actions.laravel_cache_rebuild import CacheRebuild
from exporter.heal.actions.opcache import Invalidate, Reset
from exporter.heal.actions.opcache_file_cache import PurgeFileCache
from exporter.heal.actions.views_orphans import RemoveOrphans
from exporter.heal.actions.views_permissions import FixPermissions
from exporter.heal.actions.views_recompile import Recompile
from exporter.heal.names import ACTIONS

ACTION_CLASSES: tuple[type[Action], ...] = (
    RemoveOrphans, Recompile, FixPermissions, Invalidate, Reset, PurgeFileCache, FpmReload, Warm,
    CacheRebuild,
)
assert {c.name for c in ACTION_CLASSES} == set(ACTIONS), "exporter.heal.names.ACTIONS is out of date"


def build_actions(ctx: ActionContext) -> dict[str, Action]:
    return {cls.name: cls(ctx) for cls in ACTION_CLASSES}
