"""The release being deployed: which folders a deploy may touch, and what changed between two releases.

A deploy acts on a folder it is told about (`--release`, `release=` over HTTP): every byte of that is
hostile input to `POST /deploy`. So a release is accepted only when it is the app root itself (an
in-place `git pull` deploy) or a folder beside the one the app root's symlink points to (`current` ->
`releases/N`: the new release must be another `releases/M`). Its paths (views, compiled views) are
derived from it exactly as the app's root paths are derived from the root, through the same Laravel
rules (exporter.laravel_paths) and the same compiled-directory checks as the heal's
(exporter.heal.actions.safety).
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

from exporter.config import LaravelTarget, PhpFpmTarget
from exporter.laravel_env import DotenvError, read_dotenv
from exporter.laravel_paths import compiled_views, framework_version

# Folders of a release whose PHP files are not the app's code (caches, uploads, front-end packages).
NOT_CODE = frozenset({"storage", "node_modules", ".git"})


class ReleaseError(ValueError):
    """The folder named is not one this app's deploys may touch (exit 2, HTTP 400)."""


def release_parents(laravel: LaravelTarget, pool: PhpFpmTarget | None) -> list[Path]:
    """The releases folders: the parent of where each configured symlink (the app root, the pool's
    release_symlink) points now."""
    links = [laravel.root] + ([pool.release_symlink] if pool and pool.release_symlink else [])
    return [Path(os.path.realpath(link)).parent for link in links if os.path.islink(link)]


def accept_release(given: str | None, laravel: LaravelTarget, pool: PhpFpmTarget | None) -> Path:
    """The release folder, resolved; the app root's real folder when none is given."""
    root = Path(os.path.realpath(laravel.root))
    if given is None or given == "":
        return root
    if "\x00" in given or not os.path.isabs(given):
        raise ReleaseError(f"release {given!r}: not an absolute path")
    release = Path(os.path.realpath(given))
    if not release.is_dir():
        raise ReleaseError(f"release {given}: no such directory")
    if release == root or release.parent in release_parents(laravel, pool):
        return release
    raise ReleaseError(f"release {given}: neither {laravel.root} nor a folder beside the release it "
                       "points to; a deploy only touches the app's own releases")


def _beside(path: Path, old_root: Path, new_root: Path) -> Path:
    """`path` moved from one release to the other when it lies inside the first (else unchanged)."""
    try:
        return new_root / Path(os.path.normpath(path)).relative_to(os.path.normpath(old_root))
    except ValueError:
        return path


def release_target(laravel: LaravelTarget, release: Path) -> LaravelTarget:
    """The app as it will be once `current` points to `release` (blocking: reads the release's .env).

    Paths derived from the root are derived again from the release, with the release's own `.env`;
    paths set in cachewarden's configuration stay, moved into the release when they lie under the root.
    """
    if Path(os.path.realpath(laravel.root)) == release:
        return laravel
    derived = laravel.derived_from
    dotenv = release / ".env"
    try:
        env = read_dotenv(dotenv)
    except (DotenvError, OSError):
        env = {}  # reported by check_dotenv; the default paths then apply, as they would for Laravel
    laravels = compiled_views(release, env, framework_version(release), dotenv).path
    views = release / "resources" / "views" if "views_path" in derived else _beside(
        laravel.views_dir, laravel.root, release)
    compiled = laravels if "compiled_path" in derived else _beside(
        laravel.compiled_dir, laravel.root, release)
    return laravel.model_copy(update={
        "root": release, "views_path": views, "compiled_path": compiled, "env": env,
        "derived_compiled_path": laravels,
    })


def check_dotenv(release: Path) -> str | None:
    """Why Laravel could not boot with the release's `.env` (phpdotenv's reading), or None."""
    try:
        read_dotenv(release / ".env")
    except DotenvError as exc:
        return f"{exc}; Laravel cannot boot with it"
    except OSError as exc:
        return f"{release / '.env'}: cannot read it: {exc.strerror}"
    return None


def list_views(views_dir: Path) -> list[str]:
    """Every Blade source under `views_dir`, by real path (the one Laravel names compiled files after)."""
    root = os.path.realpath(views_dir)
    out: list[str] = []
    for folder, _dirs, files in os.walk(root):
        out.extend(os.path.join(folder, f) for f in files if f.endswith(".blade.php"))
    return sorted(out)


def changed_scripts(old: Path, new: Path) -> list[str]:
    """PHP files of `new` that differ from (or are missing in) `old`, as paths under `new` (blocking).

    Contents are compared, not times: a checkout or a copy gives every file a new mtime."""
    out = []
    for folder, dirs, files in os.walk(new):
        if folder == str(new):
            dirs[:] = [d for d in dirs if d not in NOT_CODE]
        rel = os.path.relpath(folder, new)
        for name in files:
            if not name.endswith(".php") or name.endswith(".blade.php"):
                continue  # Blade sources are compiled views' business, not OPcache's
            path = os.path.join(folder, name)
            before = os.path.join(old, rel, name)
            try:
                same = filecmp.cmp(before, path, shallow=False)
            except OSError:
                same = False
            if not same:
                out.append(path)
    return sorted(out)


def listed_changes(lines: list[str], release: Path) -> list[str]:
    """A changed-file list (`git diff --name-only`) as PHP paths under the release; others are ignored."""
    out = []
    for line in lines:
        rel = line.strip()
        if not rel.endswith(".php") or rel.endswith(".blade.php"):
            continue
        if rel.startswith("/") or ".." in Path(rel).parts:
            continue  # a list is data: nothing outside the release is named through it
        out.append(str(release / rel))
    return sorted(set(out))
