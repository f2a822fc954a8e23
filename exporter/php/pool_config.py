"""PHP-FPM's configuration read by FPM's rules: `pm.max_children` and the pool's php_value overrides.

The status page does not report `pm.max_children`, and an ini directive a pool sets wins over every
php.ini and conf.d file, so both are read from FPM's configuration: php-fpm.conf or a pool file.
FPM's rules (sapi/fpm/fpm/fpm_conf.c, checked against `php-fpm8.2 -tt` in
tests/integration/test_fpm_config_oracle.py):
- Each line goes through PHP's ini scanner (exporter.php.ini_scanner): quoting, `;` comments,
  `yes`/`Off` booleans, and `${NAME}` expanded from FPM's environment at start. A `${NAME}` value is
  kept as a template here; resolving it needs the environment FPM had (see `env_source`).
- `include=PATTERN` is a glob; a relative pattern resolves against FPM's prefix (`-p`, else the prefix
  FPM was built with: `/usr/local` in the official Docker image), not against the including file's
  folder. Matches load in sorted order, directories are skipped, no match is not an error (but a
  directory the glob cannot list is). A chain of includes holds at most 5 files.
- The current section carries across files: a file included from inside `[www]` without a section
  header of its own adds to `[www]`, and after an include the section is the one the included file
  ended in. `[global]` and pool names match case-insensitively; pool directive names too.
- A later scalar directive replaces an earlier one (so `zz-docker.conf` overrides `listen` of
  `www.conf`). For `php_value[x]` it is the other way round: FPM applies the list in reverse, so the
  FIRST `php_value[x]` of the pool wins; every `php_admin_value[x]` is applied after every
  `php_value[x]` and so beats it. `php_flag`/`php_admin_flag` store "1"/"0". `$pool` in a string
  directive or php_value becomes the pool's name.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from exporter.php.ini_scanner import Entry, Section, Value, Var, scan_line

# fpm_conf_load_ini_file: "failed to include more than 5 files recursively": the main file and 4 levels
MAX_INCLUDE_DEPTH = 4
_INI_ARRAYS = {"php_value": False, "php_flag": False, "php_admin_value": True, "php_admin_flag": True}


class PoolConfigError(Exception):
    """The configuration cannot be read or does not define the wanted pool."""


@dataclass(frozen=True, slots=True)
class Directive:
    """A pool directive as the last line that set it has it."""

    value: Value
    file: str
    line: int

    def source(self) -> str:
        """The file, plus the `${NAME}` the value came from, if any (a label: never the value)."""
        label = self.value.label()
        return f"{self.file} ({label})" if label else self.file


@dataclass(frozen=True, slots=True)
class IniOverride:
    """The php_value/php_admin_value (or _flag) line that decides one ini directive for the pool."""

    value: Value
    admin: bool
    file: str

    def source(self) -> str:
        label = self.value.label()
        return f"{self.file} ({label})" if label else self.file


@dataclass(slots=True)
class PoolSettings:
    name: str
    directives: dict[str, Directive] = field(default_factory=dict)  # lower-cased directive names
    # env[NAME] lines, the first of each name: FPM applies them, like php_value, in reverse order
    env: dict[str, Value] = field(default_factory=dict)
    # Every php_value-style line in definition order; `ini` says which one wins.
    ini_lines: list[tuple[str, IniOverride]] = field(default_factory=list)

    @property
    def ini(self) -> dict[str, IniOverride]:
        """The effective override of each directive: any php_admin_* beats php_*; within a kind the
        first line wins (FPM applies the lines in reverse order of definition)."""
        out: dict[str, IniOverride] = {}
        for key, override in self.ini_lines:
            previous = out.get(key)
            if previous is None or (override.admin and not previous.admin):
                out[key] = override
        return out

    @property
    def max_children_directive(self) -> Directive | None:
        return self.directives.get("pm.max_children")

    @property
    def max_children(self) -> int | None:
        """pm.max_children when written as a number; None when unset or a `${NAME}` template."""
        d = self.max_children_directive
        return None if d is None else fpm_integer(d.value.literal)

    def env_source(self, name: str) -> str | None:
        """Which variable of a worker's environment holds the FPM master's variable `name`.

        Workers start from an empty environment (`clear_env = yes`, the default) plus the `env[…]`
        lines; with `clear_env = no` they inherit the master's. `env[X] = $NAME` is copied from the
        master's NAME when a worker starts. None when no worker variable is known to hold it.
        """
        for key, value in self.env.items():
            if value.parts in (("$" + name,), (Var(name),)):
                return key
        clear = self.directives.get("clear_env")
        if clear is not None and clear.value.literal == "" and name not in self.env:
            return name
        return None


def fpm_integer(text: str | None) -> int | None:
    """FPM's integer directive rule: an optional `-` then digits only (atoi of "" is 0)."""
    if text is None:
        return None
    digits = text[1:] if text.startswith("-") else text
    if not text.isascii() or (digits and not digits.isdigit()):
        return None
    return int(text) if digits else 0


def default_prefix(config: Path) -> Path | None:
    """FPM's prefix as far as the configuration file's place tells it: PREFIX for PREFIX/etc/*.conf
    (FPM's own layout for `-p PREFIX` and for a default build), else unknown."""
    parent = config.parent
    return parent.parent if parent.name == "etc" else None


class _Reader:
    """One pass over FPM's configuration, in FPM's order, with FPM's section state."""

    def __init__(self, prefix: Path | None) -> None:
        self.prefix = prefix
        self.pools: dict[str, PoolSettings] = {}
        self.current: PoolSettings | None = None
        self.notes: list[str] = []

    def load(self, path: str, depth: int = 0) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise PoolConfigError(f"{path}: more than {MAX_INCLUDE_DEPTH + 1} files in a chain of "
                                  "includes; FPM refuses to start with it")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().split("\n")
        except OSError as exc:
            raise PoolConfigError(f"{path}: cannot read: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            item = scan_line(line)
            if isinstance(item, Section):
                self._section(item.name)
            elif isinstance(item, Entry):
                if item.key == "include" and item.offset is None:
                    self._include(item.value, path, number, depth)
                elif self.current is not None:
                    self._entry(self.current, item, path, number)

    def _section(self, name: str) -> None:
        if name.lower() == "global":
            self.current = None
            return
        self.current = self.pools.setdefault(name.lower(), PoolSettings(name))

    def _entry(self, pool: PoolSettings, item: Entry, path: str, number: int) -> None:
        value = _expand_pool_name(item.value, pool.name)
        if item.offset is None:
            pool.directives[item.key.lower()] = Directive(value, path, number)
        elif item.key == "env":
            pool.env.setdefault(item.offset, value)
        elif item.key in _INI_ARRAYS:
            if item.key.endswith("_flag"):
                flag = item.value.literal
                value = Value.of("1" if flag == "1" else "0") if flag in ("1", "") else item.value
            pool.ini_lines.append((item.offset, IniOverride(value, _INI_ARRAYS[item.key], path)))

    def _include(self, value: Value, path: str, number: int, depth: int) -> None:
        pattern = value.literal
        if pattern is None:
            raise PoolConfigError(f"{path}:{number}: include={value.raw}: a pattern with ${{…}} or "
                                  "in another form is not read by cachewarden")
        if not pattern.startswith("/"):
            if self.prefix is None:
                raise PoolConfigError(
                    f"{path}:{number}: include={pattern} is relative, and FPM resolves it against its "
                    "prefix (-p, else its install prefix, e.g. /usr/local in the official Docker "
                    "image): set fpm_prefix")
            pattern = f"{self.prefix}/{pattern}"
        _check_glob_directory(pattern, f"{path}:{number}")
        matches = [m for m in sorted(glob.glob(pattern)) if not os.path.isdir(m)]
        if not matches:
            self.notes.append(f"{path}:{number}: include={pattern} matches no file")
        for match in matches:
            self.load(match, depth + 1)


def _check_glob_directory(pattern: str, where: str) -> None:
    """FPM globs with GLOB_ERR: a directory it must list but cannot (e.g. missing) stops FPM, while a
    pattern that merely matches nothing does not."""
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            directory = "/".join(parts[:i]) or "/"
            try:
                os.listdir(directory)
            except OSError as exc:
                raise PoolConfigError(f"{where}: include={pattern}: cannot list {directory} "
                                      f"({exc.strerror}); FPM refuses to start with it") from None
            return


def _expand_pool_name(value: Value, pool: str) -> Value:
    if not any(isinstance(p, str) and "$pool" in p for p in value.parts):
        return value
    parts = tuple(p.replace("$pool", pool) if isinstance(p, str) else p for p in value.parts)
    return Value(parts, value.raw, value.understood)


@dataclass(frozen=True, slots=True)
class FpmConfig:
    """Every pool FPM would define from one configuration file, and what the reader noticed."""

    path: Path
    pools: dict[str, PoolSettings]  # by lower-cased name
    notes: tuple[str, ...]

    def pool(self, name: str) -> PoolSettings:
        try:
            return self.pools[name.lower()]
        except KeyError:
            found = sorted(p.name for p in self.pools.values())
            raise PoolConfigError(f"{self.path}: no [{name}] pool section (found {found})") from None

    def __iter__(self) -> Iterator[PoolSettings]:
        return iter(self.pools.values())


def read_config(path: Path, prefix: Path | None = None) -> FpmConfig:
    """All pools of `path` and the files it includes; `prefix` is FPM's (default: `default_prefix`)."""
    reader = _Reader(prefix if prefix is not None else default_prefix(path))
    reader.load(str(path))
    return FpmConfig(path, reader.pools, tuple(reader.notes))


def read_pool(path: Path, name: str, prefix: Path | None = None) -> PoolSettings:
    """The settings of pool `name` from `path` (and the files it includes)."""
    return read_config(path, prefix).pool(name)
