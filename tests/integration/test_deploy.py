"""`cachewarden deploy` against a real php-fpm8.2 (OPcache with validate_timestamps=0) serving release
folders behind a `current` symlink, pages rendered by Laravel's own view factory, 16 clients requesting
them through FPM during the whole deploy."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.app import SCHEDULER, create_app
from exporter.collectors import build_collectors
from exporter.collectors.views import VIEWS_STALE, VIEWS_UNCOMPILED
from exporter.config import parse
from exporter.php import fastcgi
from exporter.php.agent import Agent
from exporter.php.endpoint import FpmEndpoint
from tests.integration.test_heal_views import LARAVEL_EXTENSIONS
from tests.support import phpfpm
from tests.support.healing import AUTH, token_file
from tests.support.laravel_app import cache_all, make_app, require_laravel
from tests.support.phpfpm import Fpm, FpmFactory
from tests.support.releases import Releases, expected, make_releases

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 16
# Workers keep resolving `current` to the old release for this long after a switch (PHP's default is
# 120 s; verify waits it out, so a short one keeps the test short).
REALPATH_TTL = 2


@pytest.fixture
def releases() -> Iterator[Releases]:
    yield from make_releases()


def fpm_for(php_fpm: FpmFactory, rel: Releases, **opcache: Any) -> Fpm:
    return php_fpm(opcache={"opcache.validate_timestamps": 0, **opcache},
                   conf_d={**LARAVEL_EXTENSIONS, "30-realpath.ini": f"realpath_cache_ttl={REALPATH_TTL}\n"},
                   pool={"pm.max_children": 6})


def write_config(tmp_path: Path, fpm: Fpm, rel: Releases, **pool: Any) -> Path:
    config = {
        "laravel": [{"name": "shop", "root": str(rel.current), "compiled_path": str(rel.compiled)}],
        "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                     "pool_config": str(fpm.pool_config), "laravel": "shop",
                     "revision_file": str(rel.current / "REVISION"), "release_symlink": str(rel.current),
                     **pool}],
        "collectors": {"fpm": {"enabled": False}},
        "heal": {"token_env": "CACHEWARDEN_TEST_NO_SUCH_VARIABLE"},
    }
    path = tmp_path / "cachewarden.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def page(fpm: Fpm, rel: Releases) -> fastcgi.Response:
    # As a web server with `root /srv/shop/current/public` asks for it: through the symlink.
    script = str(rel.current / "public" / "index.php")
    params = {"GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "SCRIPT_FILENAME": script,
              "SCRIPT_NAME": "/index.php", "REQUEST_URI": "/", "QUERY_STRING": "",
              "DOCUMENT_ROOT": str(rel.current / "public"), "SERVER_PROTOCOL": "HTTP/1.1",
              "REMOTE_ADDR": "127.0.0.1"}
    return await fastcgi.request(fpm.address, params, connect_timeout=5, read_timeout=20)


async def deploy(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "deploy", "--config.file", str(config), "--target", "shop", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Traffic:
    """CLIENTS loops requesting the page until stopped; every answer that is not a whole page of one
    release is a failure."""

    def __init__(self, fpm: Fpm, rel: Releases) -> None:
        self.fpm, self.rel = fpm, rel
        self.seen: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(CLIENTS)]

    async def _loop(self) -> None:
        good = {expected(n): f"release {n}" for n in (1, 2)}
        while not self._stop.is_set():
            try:
                resp = await page(self.fpm, self.rel)
                body = resp.body.decode(errors="replace")
                if resp.status == 200 and body in good:
                    self.seen[good[body]] += 1
                else:
                    self.failures.append(f"{resp.status}: {body[:300]} {resp.headers} {resp.stderr[:300]!r}")
            except (OSError, fastcgi.FastCGIError, TimeoutError) as exc:
                self.failures.append(repr(exc))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def write_orphan(rel: Releases, source: Path) -> Path:
    """A compiled view of a release folder that is gone, as Laravel 8.83 names and ends it."""
    path = rel.compiled / (hashlib.sha1(f"v2{source}".encode()).hexdigest() + ".php")  # noqa: S324
    path.write_text(f"<p>old</p><?php /**PATH {source} ENDPATH**/ ?>")
    return path


async def test_a_deploy_under_traffic_fails_no_request_and_returns_once_fpm_serves_the_new_release(
        php_fpm: FpmFactory, releases: Releases, tmp_path: Path) -> None:
    rel = releases
    rel.build(1, age=3600)
    rel.switch(1)
    fpm = fpm_for(php_fpm, rel)
    config = write_config(tmp_path, fpm, rel)
    first = await page(fpm, rel)
    assert first.body.decode() == expected(1)
    orphan = write_orphan(rel, rel.release(0) / "resources" / "views" / "home.blade.php")
    # New class, new config, new views, built this very second while release 1 is served: prepare
    # must compile them so that Laravel never finds one expired.
    rel.build(2)

    traffic = Traffic(fpm, rel)
    traffic.start()
    try:
        code, out, err = await deploy(config, "--release", str(rel.release(2)), "--switch-command",
                                      rel.switch_command(2), "--format", "json", "--verify-timeout", "30")
        after_exit = [(await page(fpm, rel)).body.decode() for _ in range(24)]
    finally:
        await traffic.stop()

    run = json.loads(out)
    assert code == 0, (out, err)
    assert run["result"] == "verified"
    assert [(p["phase"], p["result"]) for p in run["phase_results"]] == [
        ("prepare", "ok"), ("switch", "ok"), ("activate", "ok"), ("verify", "verified")]
    assert traffic.failures == []
    assert traffic.seen["release 1"] > 0, traffic.seen
    assert traffic.seen["release 2"] > 0, traffic.seen
    # Verify returned 0: every worker serves release 2, whichever one answers.
    assert after_exit == [expected(2)] * 24
    prepare = run["phase_results"][0]
    compiled = [d for d in prepare["done"] if d.startswith("compiled ")]
    assert len(compiled) == 2
    assert all(str(rel.release(2)) in d for d in compiled)
    # The old release's scripts were dropped, and what the release changed; the change set was known,
    # so OPcache was not reset.
    activate = run["phase_results"][2]
    assert f"invalidated {rel.release(1) / 'public' / 'index.php'}" in activate["done"], activate
    assert f"invalidated {rel.release(2) / 'app' / 'Greeter.php'}" in activate["done"], activate
    assert not any("reset" in d for d in activate["done"])
    assert any("realpath_cache_ttl" in n for n in activate["notes"])
    assert not orphan.exists(), "compiled view of a release that is gone, removed after verify"
    assert run["previous_release"] == str(rel.release(1))

    views = build_collectors(parse(yaml.safe_load(config.read_text())), {"opcache": False})[0]
    observation = await views.collect()
    assert observation.samples.value(VIEWS_STALE) == 0
    assert observation.samples.value(VIEWS_UNCOMPILED) == 0


async def test_a_changed_preloaded_class_without_restart_command_exits_1_naming_the_cause(
        php_fpm: FpmFactory, releases: Releases, tmp_path: Path) -> None:
    rel = releases
    for n in (1, 2):
        rel.build(n)
        (rel.release(n) / "preload.php").write_text(
            "<?php opcache_compile_file(__DIR__ . '/app/Greeter.php');")
    rel.switch(1)
    fpm = fpm_for(php_fpm, rel, **{"opcache.preload": str(rel.current / "preload.php"),
                                   "opcache.preload_user": "nobody"})
    config = write_config(tmp_path, fpm, rel)

    code, out, err = await deploy(config, "--release", str(rel.release(2)), "--switch-command",
                                  rel.switch_command(2), "--verify-timeout", "30")

    assert code == 1, (out, err)
    assert "cachewarden_opcache_preload_stale" in out
    assert "only an FPM restart replaces preloaded code" in out
    assert "php_fpm[www].restart_command" in out
    assert "activate: needs_restart" in out
    assert "verify: unverified" in out
    # Waiting cannot fix it: verify stopped at its first look, not at the deadline.
    run = json.loads((await deploy(config, "--phases", "verify", "--format", "json"))[1])
    assert run["phase_results"][0]["duration_seconds"] < 10


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            link = os.readlink(path) if os.path.islink(path) else None
            out[path] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, link)
    return out


async def opcache_status(fpm: Fpm, app: Path, measured: Path) -> dict[str, Any]:
    """What OPcache holds: every script with its memory, the hits of the app's own. Not counted are
    the hits of what cachewarden's measurements read themselves: `measured` (the revision file, which
    every OPcache collection includes to read the revision FPM serves) and the libraries the bootstrap
    cache inspection loads."""
    reply = await Agent(FpmEndpoint(fpm.address), fpm.agent_dir, timeout=10).run("status", {})
    status = reply.result["status"]
    scripts = status["scripts"]
    stats = status["opcache_statistics"]
    rows = zip(scripts["path"], scripts["hits"], scripts["memory"], strict=True)
    mine = f"{app}/"
    return {"scripts": sorted((p, h if p.startswith(mine) and p != str(measured) else -1, m)
                              for p, h, m in rows),
            "restarts": (stats["oom_restarts"], stats["hash_restarts"], stats["manual_restarts"]),
            "last_restart_time": stats["last_restart_time"], "start_time": stats["start_time"],
            "cached": stats["num_cached_scripts"]}


async def test_a_dry_run_changes_neither_the_tree_nor_opcache(
        php_fpm: FpmFactory, releases: Releases, tmp_path: Path) -> None:
    rel = releases
    rel.build(1, age=3600)
    rel.switch(1)
    fpm = fpm_for(php_fpm, rel)
    config = write_config(tmp_path, fpm, rel)
    assert (await page(fpm, rel)).body.decode() == expected(1)
    rel.build(2)
    write_orphan(rel, rel.release(0) / "resources" / "views" / "home.blade.php")
    # The sidecar measures OPcache every interval anyway: the state before is the measured one.
    assert (await deploy(config, "--phases", "verify", "--dry-run"))[0] == 0
    revision = rel.release(1) / "REVISION"
    tree_before, opcache_before = tree(rel.root), await opcache_status(fpm, rel.root, revision)

    code, out, err = await deploy(config, "--release", str(rel.release(2)), "--switch-command",
                                  rel.switch_command(2), "--dry-run")

    assert code == 0, (out, err)
    assert "(dry run)" in out
    assert "would compile 2 view(s)" in out
    assert "would run ['sh', '-c'" in out
    assert tree(rel.root) == tree_before
    assert await opcache_status(fpm, rel.root, revision) == opcache_before
    assert (await page(fpm, rel)).body.decode() == expected(1)


async def test_a_release_outside_the_apps_releases_is_refused_with_exit_2(
        php_fpm: FpmFactory, releases: Releases, tmp_path: Path) -> None:
    rel = releases
    rel.build(1)
    rel.switch(1)
    fpm = fpm_for(php_fpm, rel)
    config = write_config(tmp_path, fpm, rel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    code, _, err = await deploy(config, "--release", str(elsewhere), "--dry-run")
    assert code == 2
    assert f"release {elsewhere}: neither" in err
    code, _, err = await deploy(config, "--phases", "prepare,launch")
    assert code == 2
    assert "unknown phase(s) ['launch']" in err


async def test_prepare_rebuilds_the_new_releases_stale_bootstrap_caches_and_leaves_absent_ones_absent(
        tmp_path: Path) -> None:
    php = require_laravel()
    base = tmp_path / "shop"
    (base / "releases").mkdir(parents=True)
    make_app(base / "releases" / "1")
    new = make_app(base / "releases" / "2")
    cache_all(new)
    (new / "bootstrap" / "cache" / "routes-v7.php").unlink()  # this app runs without a route cache
    (new / ".env").write_text("FEATURE_FLAG=off\nDB_DATABASE=shop\n")  # after config:cache: stale
    (base / "current").symlink_to("releases/1")
    config = tmp_path / "cachewarden.yaml"
    config.write_text(yaml.safe_dump({"laravel": [{"name": "shop", "root": str(base / "current")}],
                                      "heal": {"php_cli": php}}))

    code, out, err = await deploy(config, "--phases", "prepare", "--release", str(new), "--format", "json")

    assert code == 0, (out, err)
    run = json.loads(out)
    assert run["result"] == "done"
    done = run["phase_results"][0]["done"]
    assert any(d.startswith("rebuilt config") for d in done), done
    assert "'feature' => 'off'" in (new / "bootstrap" / "cache" / "config.php").read_text()
    assert not (new / "bootstrap" / "cache" / "routes-v7.php").exists()
    assert not (base / "releases" / "1" / "bootstrap" / "cache" / "config.php").exists()


async def test_a_pipeline_deploys_through_the_sidecar_prepare_then_its_own_switch_then_activate_and_verify(
        php_fpm: FpmFactory, releases: Releases, tmp_path: Path, aiohttp_client: Any) -> None:
    rel = releases
    rel.build(1, age=3600)
    rel.switch(1)
    fpm = fpm_for(php_fpm, rel)
    assert (await page(fpm, rel)).body.decode() == expected(1)
    rel.build(2)
    data = yaml.safe_load(write_config(tmp_path, fpm, rel).read_text())
    data["heal"] = {"token_file": str(token_file(tmp_path)), "token_env": "CACHEWARDEN_TEST_NO_SUCH_VARIABLE"}
    client = await aiohttp_client(create_app(parse(data), run_collectors=False))
    await client.server.app[SCHEDULER].collect("opcache", "www")  # type: ignore[index]  # as the loop does

    prepared = await client.post(f"/deploy?target=shop&phases=prepare&release={rel.release(2)}", headers=AUTH)
    assert prepared.status == 200, await prepared.text()
    assert (await prepared.json())["run"]["result"] == "done"
    assert (await page(fpm, rel)).body.decode() == expected(1), "nothing served changes before the switch"
    rel.switch(2)
    resp = await client.post("/deploy?target=shop&phases=activate,verify&timeout=30", headers=AUTH)

    body = await resp.json()
    assert resp.status == 200, body
    assert body["run"]["result"] == "verified"
    assert not any("reset" in d for d in body["run"]["phase_results"][0]["done"]), "the change set was known"
    assert [(await page(fpm, rel)).body.decode() for _ in range(12)] == [expected(2)] * 12
    listed = await (await client.get("/deploy", headers=AUTH)).json()
    assert [r["result"] for r in listed["runs"]] == ["verified", "done"]
