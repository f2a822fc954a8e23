"""The files `views.recompile` writes, attacked the way the app's own user can, through PHP-FPM and the CLI.

The app's user owns the compiled directory and the views. It can swap the directory (or a folder of
the views) for a symlink while a heal runs, plant a symlink under a compiled view's name, and make a
source unreadable; none of it may make cachewarden (root) write outside the directory, read a file
outside the views, touch another file's metadata, or replace a working compiled view with a broken
one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.collectors.base import Observation
from exporter.config import Config, parse
from exporter.findings import ViewFindings
from exporter.heal.actions.base import ActionContext, ActionError, ActionOutcome
from exporter.heal.actions.safety import CompiledRoots
from exporter.heal.actions.views_recompile import Recompile
from exporter.heal.phpexec import SCRIPTS_DIR, PhpExecutor
from exporter.metrics import Samples
from exporter.text import display, json_safe
from tests.support import phpfpm
from tests.support.healing import (
    AUTH,
    LARAVEL_EXTENSIONS,
    Swapper,
    compiled_dir,
    make_app_dir,
    require_blade,
    require_php_cli,
    token_file,
    views_dir,
    write_view,
)
from tests.support.phpfpm import FpmFactory

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners and switching users needs root")

# The race: recompiles of RACE_VIEWS views while the app's user swaps the compiled directory for a
# symlink to another one and back, until RACE_WRITES recompiles got past the gate and wrote (those
# refused at the gate prove nothing) and the directory was swapped RACE_SWAPS times, within
# RACE_DEADLINE seconds. The real directory stays in place a little longer than the link.
RACE_VIEWS = 8
RACE_WRITES = 12
RACE_SWAPS = 40
RACE_DEADLINE = 20.0


def compiled_name(source: Path) -> str:
    """The name Debian's Laravel 8.83 gives the compiled view of `source`."""
    return hashlib.sha1(f"v2{source}".encode()).hexdigest() + ".php"  # noqa: S324 - Laravel's name


def footer(source: Path) -> bytes:
    return f"<?php /**PATH {source} ENDPATH**/ ?>".encode()


def heal_config(root: Path, via: str, fpm_factory: FpmFactory, tmp_path: Path, *,
                php_user: str | None = None, **heal: Any) -> Config:
    """A config healing `root` with PHP-FPM (a private pool linked to the app) or with the PHP CLI."""
    require_blade()
    laravel: dict[str, Any] = {"name": "shop", "root": str(root)}
    data: dict[str, Any] = {"laravel": [laravel], "heal": {"token_file": str(token_file(tmp_path)), **heal}}
    if via == "fpm":
        pool = {"user": php_user.split(":")[0], "group": "nogroup"} if php_user else {}
        fpm = fpm_factory(conf_d=LARAVEL_EXTENSIONS, pool=pool)
        # FPM's workers must read the agent script: next to the app, which they can reach.
        agent_dir = root.parent / "agent"
        agent_dir.mkdir(exist_ok=True)
        data["php_fpm"] = [{"name": "www", "address": fpm.address, "agent_dir": str(agent_dir),
                            "laravel": "shop"}]
    else:
        data["heal"]["php_cli"] = require_php_cli()
        if php_user:
            laravel["php_user"] = php_user
    return parse(data)


def context(config: Config) -> ActionContext:
    return ActionContext(config, PhpExecutor(config), CompiledRoots(config.laravel))


async def recompile(ctx: ActionContext, *sources: Path) -> ActionOutcome:
    observation = Observation(Samples("shop"), findings=ViewFindings(uncompiled=tuple(map(str, sources))))
    return await Recompile(ctx).run("shop", observation, dry_run=False)


@pytest.fixture(params=["fpm", "cli"])
def via(request: pytest.FixtureRequest) -> str:
    """Which PHP compiles: the app's FPM pool, or `heal.php_cli`."""
    return str(request.param)


@pytest.fixture
def world_searchable_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cachewarden-heal-files-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@root_only
async def test_swapping_the_directory_for_a_symlink_never_gets_a_file_written_outside(
        via: str, php_fpm: FpmFactory, tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    sources = [write_view(root, f"v{i}", f"<p>{i} {{{{ $x }}}}</p>\n") for i in range(RACE_VIEWS)]
    outside = tmp_path / "outside"
    outside.mkdir()
    ctx = context(heal_config(root, via, php_fpm, tmp_path))  # pinned before the attack starts
    swapper = Swapper(compiled_dir(root), outside)
    runs_that_wrote = refused = 0
    errors: list[str] = []
    deadline = time.monotonic() + RACE_DEADLINE
    swapper.start()
    try:
        while (runs_that_wrote < RACE_WRITES or swapper.swaps < RACE_SWAPS) and time.monotonic() < deadline:
            try:
                outcome = await recompile(ctx, *sources)
            except ActionError as exc:
                refused += 1
                errors.append(str(exc))
            else:
                runs_that_wrote += any(d.startswith("compiled ") for d in outcome.done)
                errors.extend(outcome.errors)
    finally:
        swapper.stop()

    assert sorted(outside.iterdir()) == [], "a file was written through the symlink"
    assert runs_that_wrote >= RACE_WRITES, f"{runs_that_wrote} runs wrote ({refused} refused)"
    assert swapper.swaps >= RACE_SWAPS
    # Each refusal says the directory moved or was replaced, or (in FPM) that a rewritten file could
    # not be dropped from OPcache because its path led nowhere at that moment; nothing else went wrong.
    assert [e for e in errors if "the compiled directory" not in e and "OPcache" not in e] == []
    # What was written is complete and where Laravel reads it; no temporary file is left behind.
    names = sorted(p.name for p in compiled_dir(root).iterdir())
    assert set(names) <= {compiled_name(s) for s in sources}, names
    for name in names:
        source = next(s for s in sources if compiled_name(s) == name)
        assert (compiled_dir(root) / name).read_bytes().endswith(footer(source))


@root_only
async def test_swapping_a_views_folder_for_a_symlink_never_compiles_a_file_from_outside(
        via: str, php_fpm: FpmFactory, tmp_path: Path) -> None:
    # PHP running as root (the test pool, the CLI without php_user) checks each source inside the
    # views directory, then opens it: a folder swapped in between must not make it read elsewhere.
    root = make_app_dir(tmp_path / "shop")
    folder = views_dir(root) / "pages"
    sources = [write_view(root, f"pages/p{i}", f"<p>page {i}</p>\n") for i in range(RACE_VIEWS * 4)]
    outside = tmp_path / "outside"
    outside.mkdir()
    for source in sources:
        private = outside / source.name
        private.write_text("<p>PRIVATE</p>\n")
        private.chmod(0o600)
    ctx = context(heal_config(root, via, php_fpm, tmp_path))
    # As fast as it can: PHP's window between its check and its open is a few microseconds.
    swapper = Swapper(folder, outside, pauses=(0.0005, 0.0005))
    runs_that_wrote = 0
    deadline = time.monotonic() + RACE_DEADLINE
    swapper.start()
    try:
        while (runs_that_wrote < RACE_WRITES or swapper.swaps < RACE_SWAPS) and time.monotonic() < deadline:
            outcome = await recompile(ctx, *sources)
            runs_that_wrote += any(d.startswith("compiled ") for d in outcome.done)
    finally:
        swapper.stop()

    leaked = [p.name for p in compiled_dir(root).iterdir() if b"PRIVATE" in p.read_bytes()]
    assert leaked == []
    assert runs_that_wrote >= RACE_WRITES
    assert swapper.swaps >= RACE_SWAPS


# Calls compile_views.php's source reader directly: path, the path it resolved to when checked, views dir.
READ_SOURCE = """<?php
function cachewarden_run(callable $action): void {}
require $argv[1];
try {
    [$text] = cachewarden_read_source($argv[2], $argv[3], $argv[4]);
    echo 'read: ', $text;
} catch (Throwable $e) {
    echo 'refused: ', $e->getMessage();
}
"""


@pytest.mark.parametrize("swapped", [False, True])
def test_a_source_is_read_only_if_its_path_still_leads_inside_the_views_once_open(
        tmp_path: Path, swapped: bool) -> None:
    # The swap the stress test above races for, made deterministic: checked inside, then swapped.
    php = require_php_cli()
    root = make_app_dir(tmp_path / "shop")
    source = write_view(root, "pages/p", "<p>page</p>")
    checked = os.path.realpath(source)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / source.name).write_text("<p>PRIVATE</p>")
    if swapped:
        source.parent.rename(tmp_path / "parked")
        source.parent.symlink_to(outside)
    script = tmp_path / "read_source.php"
    script.write_text(READ_SOURCE)
    out = subprocess.run(
        [php, str(script), str(SCRIPTS_DIR / "compile_views.php"), str(source), checked,
         os.path.realpath(views_dir(root))], capture_output=True, check=True).stdout
    if swapped:
        assert out == b"refused: the source was replaced while it was opened"
    else:
        assert out == b"read: <p>page</p>"


@root_only
async def test_a_symlinked_compiled_name_is_replaced_and_its_target_left_untouched(
        via: str, php_fpm: FpmFactory, tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    source = write_view(root, "home", "<p>{{ $name }}</p>\n")
    nobody = pwd.getpwnam("nobody")
    www = pwd.getpwnam("www-data")
    target = tmp_path / "private.php"
    target.write_text("private")
    os.chown(target, nobody.pw_uid, nobody.pw_gid)
    target.chmod(0o600)
    link = compiled_dir(root) / compiled_name(source)
    link.symlink_to(target)
    os.chown(compiled_dir(root), www.pw_uid, www.pw_gid)  # the app's directory
    ctx = context(heal_config(root, via, php_fpm, tmp_path, views_mode="0640"))

    outcome = await recompile(ctx, source)

    assert outcome.ok, outcome.errors
    assert target.read_text() == "private"
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, nobody.pw_gid, 0o600)
    new = os.lstat(link)
    assert stat.S_ISREG(new.st_mode), "the symlink was not replaced"
    # The directory's rules, not the link target's: its owner, and heal.views_mode.
    assert (new.st_uid, new.st_gid, stat.S_IMODE(new.st_mode)) == (www.pw_uid, www.pw_gid, 0o640)
    assert link.read_bytes().endswith(footer(source))


@root_only
async def test_a_regular_compiled_file_keeps_its_owner_and_mode(
        via: str, php_fpm: FpmFactory, tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    source = write_view(root, "home", "<p>{{ $name }}</p>\n")
    www = pwd.getpwnam("www-data")
    compiled = compiled_dir(root) / compiled_name(source)
    compiled.write_text("old")
    os.chown(compiled, www.pw_uid, www.pw_gid)
    compiled.chmod(0o664)
    ctx = context(heal_config(root, via, php_fpm, tmp_path))

    outcome = await recompile(ctx, source)

    assert outcome.ok, outcome.errors
    st = compiled.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (www.pw_uid, www.pw_gid, 0o664)
    assert compiled.read_bytes().endswith(footer(source))


def stale_pair(root: Path, name: str, old: bytes) -> tuple[Path, Path]:
    """A view whose compiled file (holding `old`) is older than its source."""
    source = write_view(root, name, f"<p>{name} {{{{ 1 }}}}</p>\n")
    compiled = compiled_dir(root) / compiled_name(source)
    compiled.write_bytes(old)
    then = time.time() - 600
    os.utime(compiled, (then, then))
    return source, compiled


@root_only
async def test_an_unreadable_source_fails_its_view_and_keeps_the_old_compiled_file(
        via: str, php_fpm: FpmFactory, tmp_path: Path, world_searchable_dir: Path) -> None:
    # PHP runs as the app's user (the pool's, or the app's php_user for the CLI), who cannot read it.
    root = make_app_dir(world_searchable_dir / "shop")
    for d in (root, root / "resources", views_dir(root)):
        d.chmod(0o755)
    secret, secret_compiled = stale_pair(root, "secret", b"<p>working old view</p>" + b"x" * 100)
    fine, fine_compiled = stale_pair(root, "fine", b"old")
    secret.chmod(0o000)
    ctx = context(heal_config(root, via, php_fpm, tmp_path, php_user="nobody"))

    outcome = await recompile(ctx, secret, fine)

    assert secret_compiled.read_bytes() == b"<p>working old view</p>" + b"x" * 100
    [error] = outcome.errors
    assert error.startswith(f"{secret}: "), error
    assert "Permission denied" in error
    assert outcome.done == [f"compiled {fine} -> {fine_compiled}"]
    assert fine_compiled.read_bytes().endswith(footer(fine))


@root_only
@pytest.mark.parametrize("php_user", ["nobody", "65534:65534"])
async def test_an_unreadable_source_never_compiled_gets_no_compiled_file(
        via: str, php_fpm: FpmFactory, tmp_path: Path, world_searchable_dir: Path, php_user: str) -> None:
    # As reported: cachewarden root, laravel[].php_user nobody, a root-owned source of mode 000 that
    # was never compiled. Its content must not reach a compiled file anyone can read.
    root = make_app_dir(world_searchable_dir / "shop")
    for d in (root, root / "resources", views_dir(root)):
        d.chmod(0o755)
    secret = write_view(root, "secret", "<p>DB_PASSWORD=hunter2 {{ 1 }}</p>\n")
    secret.chmod(0o000)
    ctx = context(heal_config(root, via, php_fpm, tmp_path, php_user=php_user))

    outcome = await recompile(ctx, secret)

    assert list(compiled_dir(root).iterdir()) == []
    [error] = outcome.errors
    assert error.startswith(f"{secret}: "), error
    assert "Permission denied" in error
    assert outcome.done == []


Client = TestClient[web.Request, web.Application]


@root_only
async def test_a_run_that_could_not_read_a_source_is_not_reported_verified(
        aiohttp_client: Any, tmp_path: Path, world_searchable_dir: Path) -> None:
    root = make_app_dir(world_searchable_dir / "shop")
    secret, secret_compiled = stale_pair(root, "secret", b"<p>working old view</p>")
    secret.chmod(0o000)
    config = parse({"laravel": [{"name": "shop", "root": str(root), "php_user": "nobody"}],
                    "heal": {"token_file": str(token_file(tmp_path)), "php_cli": require_php_cli()}})
    require_blade()
    client: Client = await aiohttp_client(create_app(config, run_collectors=False))

    resp = await client.post("/heal?action=views.recompile&target=shop", headers=AUTH)

    run = (await resp.json())["run"]
    assert run["result"] != "verified", run
    assert run["step_results"][0]["result"] == "failed", run
    assert secret_compiled.read_bytes() == b"<p>working old view</p>"


# An app whose own Blade compiler has a directive that throws while compiling, and one that is deprecated.
BOOM_APP = """<?php
return new class {
    public function make(string $what): object
    {
        if ($what !== 'blade.compiler') {
            return new class { public function bootstrap(): void {} };
        }
        $blade = new Illuminate\\View\\Compilers\\BladeCompiler(
            new Illuminate\\Filesystem\\Filesystem(), sys_get_temp_dir());
        $blade->directive('boom', function (): string { throw new LogicException('boom failed'); });
        $blade->directive('dated', function (): string {
            trigger_error('dated() is deprecated', E_USER_DEPRECATED);
            return '<?php echo 1; ?>';
        });
        return $blade;
    }
};
"""
DEBIAN_AUTOLOAD = ("<?php require '/usr/share/php/Illuminate/View/autoload.php';"
                   " require '/usr/share/php/Illuminate/Filesystem/autoload.php';\n")


async def test_a_view_that_fails_to_compile_keeps_its_old_compiled_file(
        via: str, php_fpm: FpmFactory, tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    (root / "vendor").mkdir()
    (root / "vendor" / "autoload.php").write_text(DEBIAN_AUTOLOAD)
    (root / "bootstrap").mkdir()
    (root / "bootstrap" / "app.php").write_text(BOOM_APP)
    bad, bad_compiled = stale_pair(root, "bad", b"<p>working old view</p>")
    bad.write_text("<p>@boom</p>")
    good, good_compiled = stale_pair(root, "good", b"old")
    dated, dated_compiled = stale_pair(root, "dated", b"old")
    dated.write_text("<p>@dated</p>")
    ctx = context(heal_config(root, via, php_fpm, tmp_path))

    outcome = await recompile(ctx, bad, good, dated)

    assert bad_compiled.read_bytes() == b"<p>working old view</p>"
    assert outcome.errors == [f"{bad}: LogicException: boom failed"]
    assert sorted(outcome.done) == [f"compiled {dated} -> {dated_compiled}",
                                    f"compiled {good} -> {good_compiled}"]
    assert dated_compiled.read_bytes().startswith(b"<p><?php echo 1; ?></p>")


async def test_views_larger_than_a_batch_arrive_whole_as_laravel_compiles_them(
        via: str, php_fpm: FpmFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A view of 700 KB: its compiled text is more than a FastCGI record many times over, and more
    # than a batch, so it travels alone; the small ones go two by two. (Laravel itself needs about
    # 128 MB, FPM's default memory_limit, to compile 1 MB of such dense Blade: its footer code
    # tokenises the whole compiled text.)
    monkeypatch.setattr("exporter.heal.actions.views_recompile.BATCH_BYTES", 500_000)
    monkeypatch.setattr("exporter.heal.actions.views_recompile.BATCH_VIEWS", 2)
    root = make_app_dir(tmp_path / "shop")
    line = "<li>{{ $item->name }} é @if($x) yes @endif</li>\n"
    big = write_view(root, "big", line * (700_000 // len(line)))
    small = [write_view(root, f"s{i}", f"<p>{i} {{{{ $x }}}}</p>\n") for i in range(5)]
    ctx = context(heal_config(root, via, php_fpm, tmp_path))

    outcome = await recompile(ctx, big, *small)

    assert outcome.ok, outcome.errors[:3]
    assert len(outcome.done) == 6
    reference = tmp_path / "reference"
    reference.mkdir()
    script = (
        "require '/usr/share/php/Illuminate/View/autoload.php';"
        "require '/usr/share/php/Illuminate/Filesystem/autoload.php';"
        "$c = new Illuminate\\View\\Compilers\\BladeCompiler("
        f"new Illuminate\\Filesystem\\Filesystem, '{reference}');"
        "foreach (array_slice($argv, 1) as $p) { $c->compile($p); }"
    )
    proc = await asyncio.create_subprocess_exec("php", "-r", script, "--", str(big), *map(str, small))
    assert await proc.wait() == 0
    theirs = {p.name: p.read_bytes() for p in reference.iterdir()}
    ours = {p.name: p.read_bytes() for p in compiled_dir(root).iterdir()}
    assert ours.keys() == theirs.keys()
    assert ours == theirs


async def test_a_source_whose_name_is_not_utf8_is_refused_and_the_others_compiled(
        via: str, php_fpm: FpmFactory, tmp_path: Path) -> None:
    root = make_app_dir(tmp_path / "shop")
    latin1 = write_view(root, os.fsdecode(b"caf\xe9"), "<p>café</p>")  # a Latin-1 name
    fine = write_view(root, "fine", "<p>{{ 1 }}</p>")
    ctx = context(heal_config(root, via, php_fpm, tmp_path))

    outcome = await recompile(ctx, latin1, fine)

    assert outcome.errors == []
    assert outcome.refused == [f"{latin1}: its path is not valid UTF-8, so it cannot be sent to PHP"]
    assert outcome.done == [f"compiled {fine} -> {compiled_dir(root) / compiled_name(fine)}"]
    # Shown as `check` shows it (\xe9), never as Python's \udce9; in JSON with its exact bytes.
    assert display(outcome.refused[0]).startswith(f"{views_dir(root)}/caf\\xe9.blade.php: ")
    shown = json_safe(outcome.as_dict())
    assert shown["refused"][0].startswith(f"{views_dir(root)}/caf\\xe9.blade.php: ")
    assert bytes.fromhex(shown["refused_bytes_hex"][0]).startswith(os.fsencode(latin1))
