"""Where a Laravel app keeps its compiled views, resolved the way the app's own version resolves it.

Laravel's `config/view.php` (the same from 8 to 12) reads
`env('VIEW_COMPILED_PATH', realpath(storage_path('framework/views')))`, and `storage_path()` is
`LARAVEL_STORAGE_PATH` when set (read from `$_ENV`, which the `.env` fills; framework 10.20 and later)
else `<root>/storage`. Laravel 8, 9 and 10 before 10.20 ignore `LARAVEL_STORAGE_PATH`. The version is
read from the app's `vendor/laravel/framework` (Application::VERSION); without one (a framework
installed system-wide) the newest behaviour is assumed. A relative path is taken relative to the app
root, where Laravel's own commands run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_VERSION = re.compile(r"""const\s+VERSION\s*=\s*['"](\d+)\.(\d+)(?:\.(\d+))?[^'"]*['"]""")
APPLICATION_PHP = Path("vendor/laravel/framework/src/Illuminate/Foundation/Application.php")
STORAGE_PATH_SINCE = (10, 20)  # laravel/framework#48115


@dataclass(frozen=True, slots=True)
class FrameworkVersion:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def at_least(self, major: int, minor: int = 0) -> bool:
        return (self.major, self.minor) >= (major, minor)


def framework_version(root: Path) -> FrameworkVersion | None:
    """The laravel/framework version installed in the app's vendor/, or None when there is none."""
    try:
        with (root / APPLICATION_PHP).open(encoding="utf-8", errors="replace") as source:
            head = source.read(16384)  # the constant sits near the top of the class
    except OSError:
        return None
    m = _VERSION.search(head)
    if m is None:
        return None
    return FrameworkVersion(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


@dataclass(frozen=True, slots=True)
class CompiledViews:
    path: Path
    origin: str  # for people: which setting decided it, e.g. "LARAVEL_STORAGE_PATH in /srv/app/.env"


def compiled_views(root: Path, env: dict[str, str], version: FrameworkVersion | None,
                   dotenv: Path) -> CompiledViews:
    """The compiled-view directory the app at `root` uses with the `.env` values `env`."""
    if compiled := env.get("VIEW_COMPILED_PATH"):
        return CompiledViews(root / compiled, f"VIEW_COMPILED_PATH in {dotenv}")
    storage = env.get("LARAVEL_STORAGE_PATH")
    if storage and (version is None or version.at_least(*STORAGE_PATH_SINCE)):
        return CompiledViews(root / storage / "framework" / "views", f"LARAVEL_STORAGE_PATH in {dotenv}")
    default = CompiledViews(root / "storage" / "framework" / "views",
                            f"the default under root; set compiled_path or VIEW_COMPILED_PATH in {dotenv}")
    if storage:
        return CompiledViews(default.path, f"the default under root: Laravel {version} ignores "
                                           f"LARAVEL_STORAGE_PATH in {dotenv} (read since 10.20)")
    return default
