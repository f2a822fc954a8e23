"""`cache.warm` with real processes, the real PHP CLI and a real HTTP server: what runs, where, as whom,
with which environment, and how failures are reported."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.config import Config, parse
from exporter.heal.actions import build_actions
from exporter.heal.actions.base import Action, ActionContext
from exporter.heal.actions.safety import CompiledRoots
from exporter.heal.phpexec import PhpExecutor
from tests.support.healing import heal_config, make_app_dir

pytestmark = pytest.mark.integration

MakeServer = Callable[[web.Application], Awaitable[TestServer]]
SECRET = "s3cret-value-that-must-not-leak"


def warm_action(config: Config) -> Action:
    ctx = ActionContext(config, PhpExecutor(config), CompiledRoots(config.laravel))
    return build_actions(ctx)["cache.warm"]


def warm_config(tmp_path: Path, *, commands: list[dict[str, Any]] | None = None,
                urls: list[dict[str, Any]] | None = None, **heal: Any) -> Config:
    root = make_app_dir(tmp_path / "shop")
    return heal_config(root, None, warm=[{"target": "shop", "commands": commands or [],
                                          "urls": urls or []}], **heal)


def write_env_command(name: str) -> dict[str, Any]:
    """A command that writes its environment, one NAME=value per line, to `name` in its directory."""
    return {"argv": [sys.executable, "-c",
                     f"import os; open({name!r}, 'w').write(''.join(f'{{k}}={{v}}\\n' "
                     "for k, v in os.environ.items()))"]}


async def test_commands_run_in_the_app_root_without_cachewarden_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CW_TEST_HEAL_TOKEN", SECRET)
    monkeypatch.setenv("CW_TEST_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("CW_TEST_PLAIN", "kept")
    config = parse({
        "laravel": [{"name": "shop", "root": str(make_app_dir(tmp_path / "shop"))}],
        "redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0",
                   "password_env": "CW_TEST_REDIS_PASSWORD"}],
        "heal": {"token_env": "CW_TEST_HEAL_TOKEN",
                 "warm": [{"target": "shop", "commands": [write_env_command("warm-env.txt")]}]},
    })

    outcome = await warm_action(config).run("shop", None, dry_run=False)

    assert outcome.errors == []
    assert len(outcome.done) == 1
    assert outcome.done[0].endswith(": exit 0")
    written = (tmp_path / "shop" / "warm-env.txt").read_text()
    assert "CW_TEST_PLAIN=kept\n" in written
    assert SECRET not in written
    assert "CW_TEST_HEAL_TOKEN" not in written
    assert "CW_TEST_REDIS_PASSWORD" not in written


async def test_a_failing_command_a_slow_one_and_a_missing_one_are_each_reported(tmp_path: Path) -> None:
    config = warm_config(tmp_path, commands=[
        {"argv": ["sh", "-c", "exit 3"]},
        {"argv": ["sleep", "30"], "timeout": "200ms"},
        {"argv": [str(tmp_path / "no-such-binary")]},
        {"argv": ["true"]},
    ])

    outcome = await warm_action(config).run("shop", None, dry_run=False)

    assert outcome.errors == [
        "['sh', '-c', 'exit 3']: exit 3",
        "['sleep', '30']: killed after 0.2s",
        f"[{str(tmp_path / 'no-such-binary')!r}]: cannot start (No such file or directory)",
    ]
    assert outcome.done == ["ran ['true']: exit 0"]  # one failure does not stop the rest
    assert not outcome.ok


@pytest.fixture
async def site(aiohttp_server: MakeServer) -> tuple[TestServer, list[str]]:
    """A real HTTP server: / answers 200, /broken 500, /moved a redirect; it records each path asked."""
    asked: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        if request.path == "/broken":
            return web.Response(status=500)
        if request.path == "/moved":
            raise web.HTTPFound("/elsewhere")
        return web.Response(text="warm")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return await aiohttp_server(app), asked


async def test_urls_are_fetched_and_an_error_status_fails_the_step(
        tmp_path: Path, site: tuple[TestServer, list[str]]) -> None:
    server, asked = site
    base = f"http://127.0.0.1:{server.port}"
    config = warm_config(tmp_path, urls=[{"url": f"{base}/"}, {"url": f"{base}/broken"},
                                         {"url": f"{base}/moved"}])

    outcome = await warm_action(config).run("shop", None, dry_run=False)

    assert outcome.done == [f"GET {base}/: HTTP 200", f"GET {base}/moved: HTTP 302"]
    assert outcome.errors == [f"GET {base}/broken: HTTP 500"]
    assert asked == ["/", "/broken", "/moved"]  # a redirect is not followed: it may lead off the host


async def test_a_dry_run_lists_every_command_and_url_and_runs_none(
        tmp_path: Path, site: tuple[TestServer, list[str]]) -> None:
    server, asked = site
    url = f"http://127.0.0.1:{server.port}/"
    config = warm_config(tmp_path, commands=[{**write_env_command("ran.txt"), "user": "nobody"}],
                         urls=[{"url": url}])

    outcome = await warm_action(config).run("shop", None, dry_run=True)

    assert len(outcome.done) == 2
    assert outcome.done[0].endswith(f"in {tmp_path / 'shop'} as nobody")
    assert outcome.done[1] == f"would GET {url}"
    assert not (tmp_path / "shop" / "ran.txt").exists()
    assert asked == []


async def test_a_target_with_nothing_to_warm_is_refused(tmp_path: Path) -> None:
    config = heal_config(make_app_dir(tmp_path / "shop"), None)

    outcome = await warm_action(config).run("shop", None, dry_run=False)

    assert outcome.refused == ["nothing to warm: heal.warm has no entry for 'shop'"]
    assert outcome.done == []


@pytest.fixture
def world_searchable_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cachewarden-warm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
async def test_a_command_runs_as_its_user_so_the_cache_it_writes_stays_the_apps(
        world_searchable_dir: Path) -> None:
    # As an artisan command does, the real PHP CLI writes a cache file into the app: run as www-data,
    # the file is www-data's, and the app can rewrite it later.
    php = shutil.which("php")
    if php is None:
        pytest.skip("php is not installed")
    account = pwd.getpwnam("www-data")
    config = warm_config(world_searchable_dir, commands=[
        {"argv": [php, "-r", "exit(file_put_contents('bootstrap-cache.json', json_encode("
                  "['home' => getenv('HOME'), 'groups' => posix_getgroups()])) === false ? 1 : 0);"],
         "user": "www-data"},
    ])
    root = world_searchable_dir / "shop"
    os.chown(root, account.pw_uid, account.pw_gid)

    outcome = await warm_action(config).run("shop", None, dry_run=False)

    assert outcome.ok, outcome.errors  # an unknown user is refused at load (tests/unit/test_user_group.py)
    cache = root / "bootstrap-cache.json"
    assert (cache.stat().st_uid, cache.stat().st_gid) == (account.pw_uid, account.pw_gid)
    seen = json.loads(cache.read_text())
    assert seen["home"] == account.pw_dir  # not root's
    assert seen["groups"] == []  # root's supplementary groups stayed behind
