"""PHP-FPM pool configuration: `pm.max_children` and the pool's php_value/php_admin_value overrides.

The status page does not report `pm.max_children`, and an ini directive set by the pool wins over every
php.ini and conf.d file, so both are read from the pool file itself. The format is FPM's ini dialect:
`[pool]` sections, `key = value` lines, `;` comments, and `include=glob` lines (php-fpm.conf includes
pool.d/*.conf that way), which are followed so that either the main file or a pool file can be named.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

_SECTION = re.compile(r"^\[([^\]]+)\]$")
_VALUE_KEY = re.compile(r"^php_(admin_)?(value|flag)\[([^\]]+)\]$")
_MAX_INCLUDE_DEPTH = 8


class PoolConfigError(Exception):
    """The pool configuration cannot be read or does not define the wanted pool."""


@dataclass(frozen=True, slots=True)
class IniOverride:
    """One `php_value[...]`-style line: its value, whether it is the admin form, and where it is."""

    value: str
    admin: bool
    file: str


@dataclass(slots=True)
class PoolSettings:
    name: str
    directives: dict[str, str] = field(default_factory=dict)
    ini: dict[str, IniOverride] = field(default_factory=dict)

    @property
    def max_children(self) -> int | None:
        raw = self.directives.get("pm.max_children")
        return int(raw) if raw is not None and raw.isdigit() else None


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    # An unquoted value ends at a `;` comment.
    return value.split(";", 1)[0].strip()


def _set_ini(pool: PoolSettings, key: str, value: str, file: str) -> None:
    m = _VALUE_KEY.match(key)
    if not m:
        pool.directives[key] = value
        return
    admin, directive = bool(m.group(1)), m.group(3).strip()
    previous = pool.ini.get(directive)
    # php_admin_value cannot be overridden, not even by a later php_value line for the same directive.
    if previous is not None and previous.admin and not admin:
        return
    pool.ini[directive] = IniOverride(value, admin, file)


def parse_pool_text(
    text: str, file: str, pools: dict[str, PoolSettings] | None = None, depth: int = 0
) -> dict[str, PoolSettings]:
    """Add every pool section of `text` to `pools` (later lines win, as in FPM) and return it."""
    pools = {} if pools is None else pools
    section: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        m = _SECTION.match(line)
        if m:
            section = m.group(1).strip()
            continue
        key, eq, value = line.partition("=")
        if not eq:
            continue  # FPM rejects such a line; we only read, so skip it
        key, value = key.strip(), _unquote(value)
        if key == "include":
            _include(value, Path(file).parent, pools, depth)
        elif section is not None and section != "global":
            pool = pools.setdefault(section, PoolSettings(section))
            _set_ini(pool, key, value, file)
    return pools


def _include(pattern: str, base: Path, pools: dict[str, PoolSettings], depth: int) -> None:
    if depth >= _MAX_INCLUDE_DEPTH:
        raise PoolConfigError(f"include nested deeper than {_MAX_INCLUDE_DEPTH} levels: {pattern}")
    full = pattern if pattern.startswith("/") else str(base / pattern)
    for path in sorted(glob.glob(full)):
        parse_pool_text(Path(path).read_text(encoding="utf-8", errors="replace"), path, pools, depth + 1)


def read_pool(path: Path, name: str) -> PoolSettings:
    """The settings of pool `name` from `path` (and the files it includes)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PoolConfigError(f"{path}: cannot read: {exc.strerror}") from None
    pools = parse_pool_text(text, str(path))
    try:
        return pools[name]
    except KeyError:
        raise PoolConfigError(f"{path}: no [{name}] pool section (found {sorted(pools)})") from None
