"""Laravel's bootstrap caches on disk: where each one lives, and whether it is older than its inputs.

The five files Laravel keeps under `bootstrap/cache/` (or wherever `APP_*_CACHE` moves them):

| cache    | written by                              | inputs it is judged stale against                    |
| -------- | --------------------------------------- | ---------------------------------------------------- |
| config   | `artisan config:cache`                  | the `.env` file Laravel loads, `config/**/*.php`     |
| routes   | `artisan route:cache`                   | `routes/**/*.php`                                    |
| events   | `artisan event:cache`                   | `app/Listeners/**/*.php`, the EventServiceProvider   |
| services | every boot whose provider list differs  | none: Laravel compares it itself on every boot       |
| packages | `artisan package:discover` (composer)   | `composer.lock`, `vendor/composer/installed.json`    |

Paths are resolved as `Application::normalizeCachePath` does (Laravel 8.83 in Debian, unchanged through
12), on the value as `Env::get` returns it: `null`/`(null)` (any case) is null, `true`/`false` and
`empty` (bare or in parentheses) are true, false and "", one pair of matching surrounding quotes is
removed. Null means `bootstrap/<default>`; a string starting with `/` or `\\` is taken as it is;
anything else goes through `basePath($env)`: `base/value`, except for PHP's falsy values: "" and false
give the base path itself, "0" gives `base0`; true gives `base/1`.
tests/integration/test_bootstrap_caches_oracle.py holds this against Laravel's own code.

Directories count as inputs too: a config or route file that was deleted, added or renamed after the
cache was written changes its directory's mtime, and a cache holding a deleted file's keys is stale.

Everything here is `stat` only and runs in the collector's worker thread; `InputsSignature` is what lets
the collector skip PHP when nothing changed since the last look.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from exporter.laravel_env import DotenvError, decode_dotenv, parse_dotenv

CACHES = ("config", "routes", "events", "services", "packages")
# cache -> (variable, default under bootstrap/)
CACHE_VARIABLES: Mapping[str, tuple[str, str]] = {
    "config": ("APP_CONFIG_CACHE", "cache/config.php"),
    "routes": ("APP_ROUTES_CACHE", "cache/routes-v7.php"),
    "events": ("APP_EVENTS_CACHE", "cache/events.php"),
    "services": ("APP_SERVICES_CACHE", "cache/services.php"),
    "packages": ("APP_PACKAGES_CACHE", "cache/packages.php"),
}
_ABSOLUTE_PREFIXES = ("/", "\\")
_ENV_GET: dict[str, str | bool | None] = {
    "true": True, "(true)": True, "false": False, "(false)": False, "empty": "", "(empty)": "",
    "null": None, "(null)": None,
}
_QUOTED = re.compile(r"""\A(['"])(.*)\1\Z""")  # PHP's `.` without /s: no newline


def env_get(raw: str | None) -> str | bool | None:
    """A variable's value as Illuminate\\Support\\Env::get returns it."""
    if raw is None:
        return None
    lowered = raw.lower() if raw.isascii() else None  # strtolower() is ASCII-only
    if lowered in _ENV_GET:
        return _ENV_GET[lowered]
    quoted = _QUOTED.match(raw)
    return quoted.group(2) if quoted else raw


def dotenv_values(path: Path) -> dict[str, str | None]:
    """The values phpdotenv stores for Laravel from the `.env` at `path`, before Env::get converts them.

    Not exporter.laravel_env.read_dotenv: that returns what env() returns, and Env::get looks for
    `true`/`null`/… before it removes quotes, which cannot be redone once the quotes are gone
    (`'null'` is the path `null`, `null` is no path). {} when there is no file or phpdotenv cannot read it
    (then Laravel cannot boot at all, which the app's discovery report says).
    """
    try:
        return parse_dotenv(decode_dotenv(path.read_bytes()))
    except (FileNotFoundError, DotenvError):
        return {}


def cache_path(root: Path, env: Mapping[str, str | None], cache: str) -> Path:
    """Where Laravel reads `cache` from for an app at `root` whose variables are `env` (as phpdotenv
    stores them: see dotenv_values).

    `root` is the base path as given (not resolved: Laravel does not resolve it either).
    """
    variable, default = CACHE_VARIABLES[cache]
    value = env_get(env.get(variable))
    if value is None:
        return Path(f"{root}/bootstrap/{default}")
    if isinstance(value, str) and value.startswith(_ABSOLUTE_PREFIXES):
        return Path(value)
    # basePath($path) is `base.($path ? '/'.$path : $path)`: PHP's falsy "0" is appended bare.
    if value in ("", False):
        return Path(str(root))
    if value == "0":
        return Path(f"{root}0")
    return Path(f"{root}/{'1' if value is True else value}")


def cache_paths(root: Path, env: Mapping[str, str | None]) -> dict[str, Path]:
    return {cache: cache_path(root, env, cache) for cache in CACHES}


@dataclass(frozen=True, slots=True)
class Inputs:
    """The files and trees one cache is built from, relative to the app root."""

    files: tuple[str, ...] = ()
    trees: tuple[str, ...] = ()  # every *.php below, and the directories themselves


COMPOSER = Inputs(files=("composer.lock", "vendor/composer/installed.json"))
INPUTS: Mapping[str, Inputs] = {
    "config": Inputs(trees=("config",)),  # and the env file Laravel loads: scan(env_files=…)
    "routes": Inputs(trees=("routes",)),
    "events": Inputs(files=("app/Providers/EventServiceProvider.php",), trees=("app/Listeners",)),
    # ProviderRepository::load compares the cached provider list with the current one on every boot
    # and rewrites the file when they differ: an older services.php is normal, never wrong.
    "services": Inputs(),
    "packages": COMPOSER,
}
# Caches whose staleness is judged; services.php is not (see above).
JUDGED = ("config", "routes", "events", "packages")


@dataclass(frozen=True, slots=True)
class CacheFile:
    cache: str
    path: str
    present: bool
    mtime: float | None = None
    size: int | None = None
    inode: tuple[int, int, int] | None = None  # (dev, ino, ctime_ns): changes on every rewrite
    newest_input: str | None = None  # the newest input, if any exists
    newest_input_mtime: float | None = None
    newer_inputs: tuple[str, ...] = ()  # inputs changed after the cache was written (capped)

    @property
    def stale(self) -> bool:
        return bool(self.newer_inputs)


@dataclass(slots=True)
class CachesScan:
    root: str
    caches: dict[str, CacheFile] = field(default_factory=dict)
    # (path, mtime_ns, size) of every input and cache file: equal signatures mean nothing changed.
    signature: tuple[tuple[str, int, int], ...] = ()
    unreadable: list[str] = field(default_factory=list)
    taken_at: float = 0.0


NEWER_CAP = 20  # inputs listed per stale cache; the check says how many more


def _walk(top: str, unreadable: list[str]) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of `top` and every directory and *.php file below it, without following symlinks
    to directories (Laravel's Finder does not follow them either by default)."""
    try:
        st = os.stat(top)
    except FileNotFoundError:
        return
    except OSError:
        unreadable.append(top)
        return
    yield top, st
    stack = [top]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            unreadable.append(current)
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    yield entry.path, entry.stat(follow_symlinks=False)
                elif entry.name.endswith(".php"):
                    yield entry.path, entry.stat()
            except OSError:
                unreadable.append(entry.path)


def _input_stats(root: str, inputs: Inputs, extra_files: tuple[str, ...],
                 unreadable: list[str]) -> list[tuple[str, os.stat_result]]:
    out = []
    for rel in (*inputs.files, *extra_files):
        path = f"{root}/{rel}"
        try:
            out.append((path, os.stat(path)))
        except FileNotFoundError:
            continue
        except OSError:
            unreadable.append(path)
    for rel in inputs.trees:
        out.extend(_walk(f"{root}/{rel}", unreadable))
    return out


def scan(root: Path, paths: Mapping[str, Path], *, env_files: tuple[str, ...] = (".env",),
         now: float | None = None) -> CachesScan:
    """Stat every cache and its inputs. `env_files` are the config's environment files relative to
    the root: `.env`, or the `.env.{APP_ENV}` Laravel loads instead of it. Blocking."""
    base = str(root)
    result = CachesScan(base, taken_at=time.time() if now is None else now)
    signature: list[tuple[str, int, int]] = []
    by_inputs: dict[Inputs, list[tuple[str, os.stat_result]]] = {}
    for cache in CACHES:
        spec = INPUTS[cache]
        extra = env_files if cache == "config" else ()
        key = Inputs(spec.files + extra, spec.trees)
        if key not in by_inputs:
            by_inputs[key] = _input_stats(base, spec, extra, result.unreadable)
            signature.extend((p, st.st_mtime_ns, st.st_size) for p, st in by_inputs[key])
        stats = by_inputs[key]
        path = str(paths[cache])
        try:
            st = os.stat(path)
        except FileNotFoundError:
            result.caches[cache] = CacheFile(cache, path, False)
            signature.append((path, -1, -1))
            continue
        except OSError:
            result.unreadable.append(path)
            result.caches[cache] = CacheFile(cache, path, False)
            continue
        if not stat.S_ISREG(st.st_mode):
            result.caches[cache] = CacheFile(cache, path, False)
            continue
        signature.append((path, st.st_mtime_ns, st.st_size))
        newest = max(stats, key=lambda ps: ps[1].st_mtime_ns, default=None)
        newer = sorted(p for p, s in stats if s.st_mtime_ns > st.st_mtime_ns)
        more = (f"… {len(newer) - NEWER_CAP} more",) if len(newer) > NEWER_CAP else ()
        result.caches[cache] = CacheFile(
            cache, path, True, st.st_mtime, st.st_size, (st.st_dev, st.st_ino, st.st_ctime_ns),
            newest[0] if newest else None, newest[1].st_mtime if newest else None,
            tuple(newer[:NEWER_CAP]) + more,
        )
    result.signature = tuple(signature)
    return result
