"""Which Laravel app an unlinked PHP-FPM pool serves, when that is unambiguous.

`php_fpm[].laravel` is optional, but the heal needs it: views are compiled, and their OPcache entries
dropped, inside the pool that serves the app. Left unset, a pool is linked at load when exactly one
answer is possible, and the link records why (shown by `check` and logged by `serve`):

- the configuration has one Laravel app and one pool, and no pool is linked already; or
- the pool's FPM configuration (`pool_config`, read by FPM's rules in exporter.php.pool_config) puts
  its `chdir`, `php_admin_value[doc_root]` or `open_basedir` inside the root of exactly one app.

Anything else stays unlinked: a guess would run one app's code in another app's pool.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from exporter.php.pool_config import PoolConfigError, PoolSettings, read_config

# Directives whose path says which directory tree a pool's scripts live in.
_DIRECTIVES = ("chdir",)
_INI = ("doc_root", "open_basedir")


@dataclass(frozen=True, slots=True)
class PoolLink:
    pool: str  # php_fpm[].name
    app: str  # laravel[].name
    why: str


def _inside(path: str, root: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip("/") + "/")


def _pool_settings(pool_config: Path, pool_name: str | None, target: str) -> PoolSettings | None:
    try:
        config = read_config(pool_config)
    except (PoolConfigError, OSError):
        return None  # the fpm collector reports an unreadable pool configuration
    pools = list(config)
    if pool_name is not None:
        return next((p for p in pools if p.name.lower() == pool_name.lower()), None)
    if len(pools) == 1:
        return pools[0]
    return next((p for p in pools if p.name.lower() == target.lower()), None)


def served_paths(settings: PoolSettings) -> list[tuple[str, str]]:
    """(where, path) of every literal path the pool's configuration names for its scripts."""
    out = []
    for key in _DIRECTIVES:
        d = settings.directives.get(key)
        if d is not None and d.value.literal:
            out.append((f"{key} in {d.file}", d.value.literal))
    ini = settings.ini
    for key in _INI:
        o = ini.get(key)
        if o is not None and o.value.literal:
            for part in o.value.literal.split(":"):
                if part:
                    out.append((f"php_admin_value[{key}] in {o.file}", part))
    return out


def link_pools(apps: Sequence[tuple[str, Path]],
               pools: Sequence[tuple[str, str | None, Path | None, str | None]]) -> list[PoolLink]:
    """The links to add: `apps` are (name, root); `pools` are (name, laravel, pool_config, pool_name)."""
    unlinked = [p for p in pools if p[1] is None]
    if not unlinked or not apps:
        return []
    if len(apps) == 1 and len(pools) == 1:
        return [PoolLink(pools[0][0], apps[0][0], "the only Laravel app and the only php_fpm pool")]
    links = []
    for name, _, pool_config, pool_name in unlinked:
        settings = _pool_settings(pool_config, pool_name, name) if pool_config is not None else None
        if settings is None:
            continue
        matches: dict[str, str] = {}
        for where, path in served_paths(settings):
            for app, root in apps:
                if _inside(path, root):
                    matches.setdefault(app, f"{where} is {path}, inside its root {root}")
        if len(matches) == 1:
            [(app, why)] = matches.items()
            links.append(PoolLink(name, app, why))
    return links
