"""Compiled-view trees for tests: synthetic ones written in Python, and real ones compiled with Laravel's
Blade compiler (Debian's php-laravel-framework, through the php CLI)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from exporter.fs.compiled_views import CompiledViewScanner

T0 = 1_700_000_000  # a fixed wall-clock second the trees' mtimes are set around
COMPILE_SCRIPT = Path(__file__).with_name("blade_compile.php")
RENDER_SCRIPT = Path(__file__).with_name("blade_render.php")
AUTOLOADS = (
    Path("/usr/share/php/Illuminate/View/autoload.php"),
    Path("/usr/share/php/Illuminate/Filesystem/autoload.php"),
    Path("/usr/share/php/Illuminate/Config/autoload.php"),
    Path("/usr/share/php/Illuminate/Events/autoload.php"),
)


def blade_unavailable() -> str | None:
    """Why the real compiler cannot run here, or None when it can."""
    if shutil.which("php") is None:
        return "php CLI not installed (Debian package php8.2-cli)"
    missing = [str(p) for p in AUTOLOADS if not p.is_file()]
    if missing:
        return f"Laravel's Blade compiler not installed (Debian package php-laravel-framework): {missing}"
    return None


requires_blade = pytest.mark.skipif(blade_unavailable() is not None, reason=str(blade_unavailable()))


def compile_views(compiled_dir: Path, views: Sequence[Path]) -> list[Path]:
    """Compile `views` into `compiled_dir`; return each compiled file's path, in order."""
    if not views:
        return []
    done = subprocess.run(
        ["php", str(COMPILE_SCRIPT), str(compiled_dir), *map(str, views)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Blade compile failed ({done.returncode}): {done.stderr.strip()}")
    return [Path(line) for line in done.stdout.splitlines()]


def render_view(views_dir: Path, compiled_dir: Path, name: str) -> str:
    """Render view `name` with Laravel's view factory, whose `<x-alert>` is an inline component; return
    the HTML. Laravel compiles what it renders, and writes the component's template as a .blade.php file
    into `compiled_dir`."""
    done = subprocess.run(
        ["php", str(RENDER_SCRIPT), str(views_dir), str(compiled_dir), name],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Blade render failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class AppTree:
    """A Laravel app's views and compiled views, with mtimes chosen by the test."""

    def __init__(self, base: Path) -> None:
        self.views = base / "resources" / "views"
        self.compiled = base / "storage" / "framework" / "views"
        self.views.mkdir(parents=True)
        self.compiled.mkdir(parents=True)
        (self.compiled / ".gitignore").write_text("*\n!.gitignore\n")

    def source(self, rel: str, mtime: float = T0) -> Path:
        path = self.views / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<h1>{rel}</h1>\n")
        set_mtime(path, mtime)
        return path

    def compile(self, source: Path | str, mtime: float = T0 + 10, footer: bool = True) -> Path:
        """A compiled file named as Laravel 8.75+ names it, whose footer names `source` verbatim."""
        path = self.compiled_path(source)
        body = "<?php echo e($title); ?>\n"
        path.write_text(body + (f"<?php /**PATH {source} ENDPATH**/ ?>" if footer else ""))
        set_mtime(path, mtime)
        return path

    def inline_component(self, template: str) -> Path:
        """The raw template of an inline component, where and as Laravel writes it (no footer)."""
        path = self.compiled / (hashlib.sha1(template.encode()).hexdigest() + ".blade.php")  # noqa: S324
        path.write_text(template)
        return path

    def compiled_path(self, source: Path | str) -> Path:
        return self.compiled / (hashlib.sha1(f"v2{source}".encode()).hexdigest() + ".php")  # noqa: S324

    def scanner(self, **kwargs: Any) -> CompiledViewScanner:
        return CompiledViewScanner(self.views, self.compiled, **kwargs)


def set_mtime(path: Path, seconds: float) -> None:
    ns = int(seconds * 1_000_000_000)
    os.utime(path, ns=(ns, ns), follow_symlinks=False)
