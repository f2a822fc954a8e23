"""Preloading in a real php-fpm8.2 with releases behind a `current` symlink: a release switch flags the
preloaded scripts of the old release, `$PRELOAD$` is never counted, and the heal never resets for what
only a restart fixes (needs_restart without a restart_command, one verified reload with it)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.collectors import build_collectors
from exporter.collectors.base import Observation, Verdict
from exporter.collectors.opcache import (
    OPCACHE_CACHED_SCRIPTS,
    OPCACHE_LAST_RESTART,
    OPCACHE_RESTARTS,
    OPCACHE_SCRIPTS_MISSING,
    OPCACHE_SCRIPTS_OUTSIDE_RELEASE,
    OPCACHE_SCRIPTS_STALE,
    OPCACHE_START_TIME,
    OpcacheCollector,
)
from exporter.collectors.opcache_preload import PRELOAD_SCRIPTS, PRELOAD_STALE
from exporter.config import Config, parse
from exporter.heal.routes import HEAL_RUNNER
from exporter.php import fastcgi
from tests.support import phpfpm
from tests.support.healing import AUTH, alert, payload, token_file
from tests.support.phpfpm import Fpm, FpmFactory

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

Client = TestClient[web.Request, web.Application]


@dataclass
class App:
    root: Path

    @property
    def current(self) -> Path:
        return self.root / "current"

    def release(self, n: int) -> Path:
        return self.root / "releases" / str(n)

    def switch(self, n: int) -> None:
        """Point `current` at release n the way deploy tools do: a new symlink renamed over the old."""
        tmp = self.root / "current.new"
        tmp.symlink_to(f"releases/{n}")
        os.rename(tmp, self.current)


@pytest.fixture
def app() -> Iterator[App]:
    # Preloading runs as opcache.preload_user (FPM runs as root here), which must reach the files:
    # not under pytest's tmp_path, which only root may enter.
    root = Path(tempfile.mkdtemp(prefix="cachewarden-preload-", dir="/tmp"))
    root.chmod(0o755)
    try:
        for n in (1, 2):
            d = root / "releases" / str(n)
            d.mkdir(parents=True)
            (d / "Greeter.php").write_text(
                f"<?php class Greeter {{ public static function hi(): string {{ return 'release {n}'; }} }}")
            (d / "preload.php").write_text("<?php opcache_compile_file(__DIR__ . '/Greeter.php');")
            (d / "index.php").write_text("<?php echo Greeter::hi();")
        (root / "current").symlink_to("releases/1")
        yield App(root)
    finally:
        shutil.rmtree(root)


def preloading_fpm(php_fpm: FpmFactory, app: App) -> Fpm:
    return php_fpm(opcache={"opcache.preload": str(app.current / "preload.php"),
                            "opcache.preload_user": "nobody"})


async def serve(fpm: Fpm, script: Path) -> bytes:
    params = {"GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "SCRIPT_FILENAME": str(script),
              "SCRIPT_NAME": "/index.php", "REQUEST_URI": "/index.php", "QUERY_STRING": "",
              "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
    return (await fastcgi.request(fpm.address, params, connect_timeout=2, read_timeout=5)).body


def fpm_config(fpm: Fpm, app: App, tmp_path: Path, **extra: Any) -> Config:
    return parse({
        "php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                     "pool_config": str(fpm.pool_config), "release_symlink": str(app.current), **extra}],
        "heal": {"token_file": str(token_file(tmp_path)), "token_env": "CACHEWARDEN_TEST_NO_SUCH_VARIABLE"},
    })


def opcache_collector(config: Config) -> OpcacheCollector:
    c = build_collectors(config, {"fpm": False})[0]
    assert isinstance(c, OpcacheCollector)
    return c


def check(obs: Observation, name: str) -> Any:
    return next(c for c in obs.checks if c.name == name)


async def test_release_switch_flags_the_old_preloaded_scripts_and_preload_is_no_script(
        php_fpm: FpmFactory, app: App, tmp_path: Path) -> None:
    fpm = preloading_fpm(php_fpm, app)
    assert await serve(fpm, app.current / "index.php") == b"release 1"
    collector = opcache_collector(fpm_config(fpm, app, tmp_path))

    before = await collector.collect()
    assert before.samples.value(PRELOAD_SCRIPTS) == 2
    assert before.samples.value(PRELOAD_STALE) == 0
    # OPcache lists `$PRELOAD$` among its scripts, and reports timestamp 0 for preloaded ones even with
    # validate_timestamps=1: neither is a missing or stale script.
    assert before.samples.value(OPCACHE_SCRIPTS_MISSING) == 0
    assert before.samples.value(OPCACHE_SCRIPTS_STALE) == 0
    # Greeter.php and preload.php; index.php was too new to cache when served, $PRELOAD$ is no script.
    assert before.samples.value(OPCACHE_CACHED_SCRIPTS) == 2
    assert "$PRELOAD$" not in json.dumps(before.details)
    assert check(before, "opcache.preload").verdict is Verdict.OK

    app.switch(2)
    assert await serve(fpm, app.current / "index.php") == b"release 1", "preloaded class of release 1"

    after = await collector.collect()
    assert after.samples.value(PRELOAD_STALE) == 2
    assert after.samples.value(OPCACHE_SCRIPTS_MISSING) == 0
    found = check(after, "opcache.preload")
    assert found.verdict is Verdict.PROBLEM
    assert set(found.items) == {str(app.release(1) / "Greeter.php"), str(app.release(1) / "preload.php")}
    assert "2 of another release" in found.summary
    assert "FPM restart" in found.summary
    assert check(after, "opcache.release").summary.startswith(f"{app.current} points to {app.release(2)}")
    # Deterministic: the sidecar resolves `current`, so every collection agrees, whichever worker answers.
    for _ in range(4):
        again = await collector.collect()
        assert again.samples.value(OPCACHE_SCRIPTS_OUTSIDE_RELEASE) == after.samples.value(
            OPCACHE_SCRIPTS_OUTSIDE_RELEASE)
        assert again.samples.value(PRELOAD_STALE) == 2


async def deliver(client: Client, n: int) -> dict[str, Any]:
    body = json.dumps(payload(alert("CachewardenOpcachePreloadStale", "www", fingerprint="pre",
                                    starts_at=f"2026-01-01T00:0{n}:00Z")))
    resp = await client.post("/heal", data=body, headers={"Content-Type": "application/json", **AUTH})
    assert resp.status == 200, await resp.text()
    decision: dict[str, Any] = (await resp.json())["decisions"][0]
    return decision


async def test_without_restart_command_three_deliveries_reset_nothing_and_say_needs_restart(
        php_fpm: FpmFactory, app: App, tmp_path: Path, aiohttp_client: Any) -> None:
    fpm = preloading_fpm(php_fpm, app)
    app.switch(2)
    client: Client = await aiohttp_client(create_app(fpm_config(fpm, app, tmp_path), run_collectors=False))
    runner = client.server.app[HEAL_RUNNER]  # type: ignore[index]

    for n in range(3):
        decision = await deliver(client, n)
        assert decision["decision"] == "started"
        await runner.wait_idle()
        run = runner.run(decision["run_id"])
        assert run is not None
        assert run.result == "needs_restart", run.as_dict()
        assert run.records == []
        assert "restart_command" in (run.note or "")

    status = await runner.scheduler.collect("opcache", "www")
    assert status.observation is not None
    assert status.observation.samples.value(OPCACHE_RESTARTS, cause="manual") == 0
    assert status.observation.samples.value(OPCACHE_LAST_RESTART) == 0
    assert status.observation.samples.value(PRELOAD_STALE) == 2
    assert not any(runner.metrics.ineffective.values())


async def test_with_restart_command_one_delivery_reloads_fpm_once_and_is_verified(
        php_fpm: FpmFactory, app: App, tmp_path: Path, aiohttp_client: Any) -> None:
    fpm = preloading_fpm(php_fpm, app)
    assert fpm.process is not None
    marker = tmp_path / "reloads"
    # What `systemctl reload php8.2-fpm` does to the master (SIGUSR2: re-exec, preloading again), and a
    # line per run so the test can count them.
    command = ["sh", "-c", f'echo reload >> {marker} && kill -USR2 {fpm.process.pid}']
    config = fpm_config(fpm, app, tmp_path, restart_command=command, restart_timeout="20s")
    client: Client = await aiohttp_client(create_app(config, run_collectors=False))
    runner = client.server.app[HEAL_RUNNER]  # type: ignore[index]
    first = await runner.scheduler.collect("opcache", "www")
    assert first.observation is not None
    started = first.observation.samples.value(OPCACHE_START_TIME)
    app.switch(2)

    decision = await deliver(client, 0)
    await runner.wait_idle()

    run = runner.run(decision["run_id"])
    assert run is not None
    assert run.result == "verified", run.as_dict()
    assert [(r.action, r.result) for r in run.records] == [("fpm.reload", "verified")]
    assert run.records[0].outcome is not None
    assert run.records[0].outcome.errors == []
    assert run.records[0].duration < 10, "the restart is seen as soon as the pool answers"
    assert marker.read_text() == "reload\n"
    assert await serve(fpm, app.current / "index.php") == b"release 2"
    status = await runner.scheduler.collect("opcache", "www")
    assert status.observation is not None
    assert (status.observation.samples.value(OPCACHE_START_TIME) or 0) >= (started or 0)
    assert status.observation.samples.value(PRELOAD_STALE) == 0
