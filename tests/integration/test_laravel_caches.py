"""Laravel's bootstrap caches for real: a Laravel 8 app (Debian's framework), artisan, PHP-FPM with OPcache.

The origin incident as a test: a deploy changes `.env` after `config:cache`, the app keeps running with
the old value; the heal rebuilds the cache while 16 clients keep requesting the app through FPM, and
not one request fails, and FPM serves the new value even with opcache.validate_timestamps=0.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.collectors.base import Observation
from exporter.config import Config, parse
from exporter.heal.routes import HEAL_RUNNER
from exporter.heal.runner import HealRunner
from tests.support import phpfpm
from tests.support.healing import AUTH, alert, payload, token_file
from tests.support.laravel_app import EXTENSIONS, artisan, backdate, cache_all, get, make_app, require_laravel
from tests.support.phpfpm import Fpm, FpmFactory

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
CLIENTS = 16
# The clients, the collector's agent request and the heal's invalidation each need a worker.
POOL = {"pm.max_children": CLIENTS + 2}
# What made the origin incident: FPM never looks at the file again once it has cached it.
NO_REVALIDATION = {"opcache.validate_timestamps": 0, "opcache.file_update_protection": 0}
SECRET = "s3cr3t-flag-value"


def config_for(root: Path, tmp_path: Path, fpm: Fpm | None = None) -> Config:
    php = require_laravel()
    data: dict[str, Any] = {
        "laravel": [{"name": "shop", "root": str(root)}],
        "heal": {"token_file": str(token_file(tmp_path)), "php_cli": php},
    }
    if fpm is not None:
        data["php_fpm"] = [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                            "laravel": "shop"}]
    return parse(data)


async def runner_for(config: Config, aiohttp_client: MakeClient) -> tuple[Client, HealRunner]:
    client = await aiohttp_client(create_app(config, run_collectors=False))
    return client, client.server.app[HEAL_RUNNER]  # type: ignore[index]


async def measure(runner: HealRunner) -> Observation:
    status = await runner.scheduler.collect("laravel_caches", "shop")
    assert status.up, status.error
    assert status.observation is not None
    return status.observation


def value(o: Observation, metric: str, **labels: str) -> float | None:
    wanted = ("shop", *labels.values())
    return next((v for s, lv, v in o.samples.values if s.name == metric and lv == wanted), None)


def problems(o: Observation) -> dict[str, tuple[str, ...]]:
    return {c.name: c.items for c in o.checks if not c.ok}


def write_env(root: Path, text: str) -> None:
    (root / ".env").write_text(text)


async def test_a_changed_env_value_makes_the_config_stale_naming_the_key_and_never_its_value(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    _, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)
    before = await measure(runner)
    assert value(before, "cachewarden_laravel_cache_stale", cache="config") == 0
    assert value(before, "cachewarden_laravel_config_keys_differing") == 0
    assert value(before, "cachewarden_laravel_cache_unparsable", cache="config") == 0
    assert problems(before) == {}

    write_env(root, f"FEATURE_FLAG={SECRET}\nDB_DATABASE=shop\n")
    after = await measure(runner)

    assert value(after, "cachewarden_laravel_cache_stale", cache="config") == 1
    assert value(after, "cachewarden_laravel_cache_stale", cache="routes") == 0
    assert value(after, "cachewarden_laravel_config_keys_differing") == 1
    assert problems(after)["cached config values"] == (".env FEATURE_FLAG",)
    assert after.details["env_keys_differing"] == ["FEATURE_FLAG"]
    everything = json.dumps([after.details, [c.as_dict() for c in after.checks],
                             [list(v[1]) for v in after.samples.values]])
    assert SECRET not in everything
    assert "on" not in after.details["env_keys_differing"]


async def test_a_touched_but_unchanged_env_is_older_than_the_cache_yet_no_key_differs(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    _, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)
    (root / ".env").touch()

    o = await measure(runner)

    assert value(o, "cachewarden_laravel_cache_stale", cache="config") == 1
    assert value(o, "cachewarden_laravel_config_keys_differing") == 0
    assert problems(o) == {}, "the values match: a note, not a problem"
    assert "config cache older than its inputs" in {c.name for c in o.checks}


async def test_an_added_route_makes_the_route_cache_stale(tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    _, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)
    assert value(await measure(runner), "cachewarden_laravel_cache_stale", cache="routes") == 0

    with (root / "routes" / "web.php").open("a") as f:
        f.write("Route::get('/added', fn () => 'added');\n")
    o = await measure(runner)

    assert value(o, "cachewarden_laravel_cache_stale", cache="routes") == 1
    assert value(o, "cachewarden_laravel_cache_stale", cache="config") == 0
    [item] = problems(o)["stale bootstrap caches"]
    assert item.startswith("routes: ")
    assert item.endswith(str(root / "routes" / "web.php"))


async def test_php_runs_only_after_a_cache_or_an_input_changed(tmp_path: Path,
                                                               aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    _, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)
    runs = "cachewarden_laravel_cache_inspections_total"

    assert value(await measure(runner), runs) == 1
    assert value(await measure(runner), runs) == 1
    (root / "config" / "shop.php").touch()
    assert value(await measure(runner), runs) == 2


async def test_the_rebuild_leaves_config_routes_and_events_as_artisan_builds_them(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    write_env(root, "FEATURE_FLAG=off\nDB_DATABASE=shop\n")
    with (root / "routes" / "web.php").open("a") as f:
        f.write("Route::get('/added', fn () => 'added');\n")
    client, _ = await runner_for(config_for(root, tmp_path), aiohttp_client)

    resp = await client.post("/heal?action=laravel.cache_rebuild&target=shop", headers=AUTH)

    run: dict[str, Any] = (await resp.json())["run"]
    assert run["result"] == "verified", run
    done = run["step_results"][0]["done"]
    assert [d.split(":")[0] for d in done] == ["rebuilt config", "rebuilt routes"]
    cached = (root / "bootstrap" / "cache" / "config.php").read_text()
    assert "'feature' => 'off'" in cached
    reference = tmp_path / "reference"
    os.rename(root / "bootstrap" / "cache" / "config.php", tmp_path / "ours.php")
    artisan(root, "config:cache")
    os.rename(root / "bootstrap" / "cache" / "config.php", reference)
    assert (tmp_path / "ours.php").read_bytes() == reference.read_bytes()
    assert not [p for p in (root / "bootstrap" / "cache").iterdir() if ".cwtmp-" in p.name]


async def test_cache_routes_rebuilds_the_route_cache_alone_even_when_it_is_fresh(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    caches = root / "bootstrap" / "cache"
    write_env(root, "FEATURE_FLAG=off\nDB_DATABASE=shop\n")  # the config is stale, the routes are not
    config_before = (caches / "config.php").read_bytes()
    routes_before = os.stat(caches / "routes-v7.php")
    client, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)
    assert value(await measure(runner), "cachewarden_laravel_cache_stale", cache="routes") == 0

    dry = await client.post("/heal?action=laravel.cache_rebuild&target=shop&cache=routes&dry_run=1",
                            headers=AUTH)
    planned = (await dry.json())["run"]
    assert (dry.status, planned["result"], planned["args"]) == (200, "dry_run", {"cache": "routes"})
    assert planned["step_results"][0]["done"] == [
        f"would rebuild routes ({caches / 'routes-v7.php'}) with artisan route:cache, then rename it into "
        "place"]
    assert os.stat(caches / "routes-v7.php").st_ino == routes_before.st_ino

    resp = await client.post("/heal?action=laravel.cache_rebuild&target=shop&cache=routes", headers=AUTH)

    run: dict[str, Any] = (await resp.json())["run"]
    assert (resp.status, run["result"]) == (200, "verified"), run
    assert [d.split(":")[0] for d in run["step_results"][0]["done"]] == ["rebuilt routes"]
    assert os.stat(caches / "routes-v7.php").st_ino != routes_before.st_ino, "renamed into place"
    assert (caches / "config.php").read_bytes() == config_before
    after = await measure(runner)
    assert value(after, "cachewarden_laravel_cache_stale", cache="config") == 1
    assert value(after, "cachewarden_laravel_cache_stale", cache="routes") == 0


async def test_the_routes_plan_rebuilds_the_routes_and_leaves_a_stale_config_to_its_own_alert(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    caches = root / "bootstrap" / "cache"
    write_env(root, "FEATURE_FLAG=off\nDB_DATABASE=shop\n")
    with (root / "routes" / "web.php").open("a") as f:
        f.write("Route::get('/added', fn () => 'added');\n")
    config_before = (caches / "config.php").read_bytes()
    client, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)

    body = payload(alert("CachewardenLaravelRoutesStale", fingerprint="routes"))
    resp = await client.post("/heal", data=json.dumps(body),
                             headers={"Content-Type": "application/json", **AUTH})
    [decision] = (await resp.json())["decisions"]
    await runner.wait_idle()

    heal = runner.run(decision["run_id"])
    assert heal is not None
    run = heal.as_dict()
    assert (run["result"], run["args"]) == ("verified", {"cache": "routes"}), run
    assert [d.split(":")[0] for d in run["step_results"][0]["done"]] == ["rebuilt routes"]
    assert (caches / "config.php").read_bytes() == config_before
    assert value(await measure(runner), "cachewarden_laravel_cache_stale", cache="config") == 1


async def test_config_and_routes_alerts_firing_together_are_each_healed_on_their_own_cache(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    write_env(root, "FEATURE_FLAG=off\nDB_DATABASE=shop\n")
    with (root / "routes" / "web.php").open("a") as f:
        f.write("Route::get('/added', fn () => 'added');\n")
    client, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)

    body = payload(alert("CachewardenLaravelConfigStale", fingerprint="config"),
                   alert("CachewardenLaravelRoutesStale", fingerprint="routes"))
    resp = await client.post("/heal", data=json.dumps(body),
                             headers={"Content-Type": "application/json", **AUTH})
    decisions = (await resp.json())["decisions"]
    await runner.wait_idle()

    assert [d["decision"] for d in decisions] == ["started", "started"], decisions
    runs = [r.as_dict() for r in (runner.run(d["run_id"]) for d in decisions) if r is not None]
    assert [(r["result"], [d.split(":")[0] for d in r["step_results"][0]["done"]]) for r in runs] == [
        ("verified", ["rebuilt config"]), ("verified", ["rebuilt routes"])], runs
    after = await measure(runner)
    assert [value(after, "cachewarden_laravel_cache_stale", cache=c) for c in ("config", "routes")] == [0, 0]
    assert "'feature' => 'off'" in (root / "bootstrap" / "cache" / "config.php").read_text()


async def test_healing_a_target_runs_each_stale_caches_plan_on_its_own_cache_config_first(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    write_env(root, "FEATURE_FLAG=off\nDB_DATABASE=shop\n")
    with (root / "routes" / "web.php").open("a") as f:
        f.write("Route::get('/added', fn () => 'added');\n")
    client, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)

    resp = await client.post("/heal?target=shop", headers=AUTH)

    healed = await resp.json()
    assert (resp.status, healed["result"]) == (200, "verified"), healed
    runs = [(r["plan"], r["args"], [d.split(":")[0] for d in r["step_results"][0]["done"]])
            for r in healed["runs"]]
    assert runs == [("CachewardenLaravelConfigStale", {"cache": "config"}, ["rebuilt config"]),
                    ("CachewardenLaravelRoutesStale", {"cache": "routes"}, ["rebuilt routes"])]
    after = await measure(runner)
    assert [value(after, "cachewarden_laravel_cache_stale", cache=c) for c in ("config", "routes")] == [0, 0]


async def test_a_named_cache_the_app_runs_without_is_not_created(tmp_path: Path,
                                                                 aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    events = root / "bootstrap" / "cache" / "events.php"
    events.unlink()
    client, _ = await runner_for(config_for(root, tmp_path), aiohttp_client)

    resp = await client.post("/heal?action=laravel.cache_rebuild&target=shop&cache=events", headers=AUTH)

    run: dict[str, Any] = (await resp.json())["run"]
    assert (resp.status, run["result"]) == (422, "unverified"), run  # not what was asked: curl --fail fails
    step = run["step_results"][0]
    assert step["done"] == [], run
    assert step["refused"] == [f"events: there is no cache at {events}; an app that runs without one is "
                               "not given one"]
    assert not events.exists()


@dataclass
class Traffic:
    requests: int = 0
    bad: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


async def traffic(fpm: Fpm, root: Path, running: Callable[[], bool]) -> Traffic:
    """CLIENTS loops requesting /feature until `running()` turns false."""
    seen = Traffic()

    async def loop() -> None:
        while True:
            still = running()
            resp = await get(fpm.address, root, "/feature")
            seen.requests += 1
            body = resp.body.decode(errors="replace")
            if resp.status != 200 or body not in ("feature=on", "feature=off"):
                seen.bad.append(f"HTTP {resp.status}: {body[:300]}")
            seen.seen.add(body)
            if not still:
                return

    await asyncio.gather(*(loop() for _ in range(CLIENTS)))
    return seen


async def test_the_config_is_rebuilt_under_live_traffic_with_no_failed_request_and_fpm_serves_it(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    fpm = php_fpm(conf_d=EXTENSIONS, pool=POOL, opcache=NO_REVALIDATION)
    root = make_app(tmp_path / "shop")
    cache_all(root)
    client, runner = await runner_for(config_for(root, tmp_path, fpm), aiohttp_client)
    warm = await traffic(fpm, root, lambda: False)
    assert (warm.bad, warm.seen) == ([], {"feature=on"})
    before = await measure(runner)
    assert problems(before) == {}
    assert value(before, "cachewarden_laravel_cache_served_stale", cache="config") == 0

    # The deploy: a new .env, and no config:cache. FPM keeps running with the cached old value.
    write_env(root, "FEATURE_FLAG=off\nDB_DATABASE=shop\n")
    stale = await measure(runner)
    assert problems(stale)["cached config values"] == (".env FEATURE_FLAG",)
    assert (await get(fpm.address, root, "/feature")).body == b"feature=on"

    body = payload(alert("CachewardenLaravelConfigStale", fingerprint="config"))
    resp = await client.post("/heal", data=json.dumps(body),
                             headers={"Content-Type": "application/json", **AUTH})
    [decision] = (await resp.json())["decisions"]
    assert decision["decision"] == "started"
    heal = runner.run(decision["run_id"])
    assert heal is not None
    seen = await traffic(fpm, root, lambda: heal.state != "finished")
    await runner.wait_idle()

    assert seen.bad == []
    assert seen.requests > CLIENTS
    run = heal.as_dict()
    assert run["result"] == "verified", run
    assert any(d.startswith("invalidated ") for d in run["step_results"][0]["done"]), run
    # validate_timestamps=0: every worker serves the new config only because it was invalidated.
    after = await traffic(fpm, root, lambda: False)
    assert (after.bad, after.seen) == ([], {"feature=off"})
    healed = await measure(runner)
    assert problems(healed) == {}
    # What CachewardenLaravelConfigStale reads is all back to 0: the alert clears.
    for metric in ("cache_stale", "cache_unparsable", "cache_served_stale"):
        assert value(healed, f"cachewarden_laravel_{metric}", cache="config") == 0, metric
    assert value(healed, "cachewarden_laravel_config_keys_differing") == 0


async def test_a_cache_opcache_still_serves_in_an_old_version_is_reported(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    fpm = php_fpm(conf_d=EXTENSIONS, opcache=NO_REVALIDATION)
    root = make_app(tmp_path / "shop")
    cache_all(root, seconds_ago=60)
    _, runner = await runner_for(config_for(root, tmp_path, fpm), aiohttp_client)
    assert (await get(fpm.address, root, "/feature")).body == b"feature=on"
    assert value(await measure(runner), "cachewarden_laravel_cache_served_stale", cache="config") == 0

    # config:cache run by hand after a .env change: right on disk, but FPM keeps its cached copy.
    write_env(root, "FEATURE_FLAG=off\nDB_DATABASE=shop\n")
    artisan(root, "config:cache")
    assert (await get(fpm.address, root, "/feature")).body == b"feature=on"
    o = await measure(runner)

    assert value(o, "cachewarden_laravel_cache_stale", cache="config") == 0
    assert value(o, "cachewarden_laravel_config_keys_differing") == 0
    assert value(o, "cachewarden_laravel_cache_served_stale", cache="config") == 1
    assert value(o, "cachewarden_laravel_cache_served_stale", cache="routes") == 0
    assert problems(o)["served bootstrap caches"] == ("config",)

    # The same for the route cache, whose one call goes to a recorder rather than a router.
    with (root / "routes" / "web.php").open("a") as f:
        f.write("Route::get('/added', fn () => 'added');\n")
    artisan(root, "route:cache")
    assert (await get(fpm.address, root, "/added")).body != b"added", "FPM still serves the old routes"
    o = await measure(runner)
    assert value(o, "cachewarden_laravel_cache_stale", cache="routes") == 0
    assert problems(o)["served bootstrap caches"] == ("config", "routes")


HALF_WRITTEN = "<?php return array (\n  'app' => \n  array (\n    'name' => 'Sh"


async def test_a_half_written_config_is_reported_and_replaced_whole_inside_bootstrap_cache(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    cache_all(root)
    config_php = root / "bootstrap" / "cache" / "config.php"
    config_php.write_text(HALF_WRITTEN)
    client, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)

    o = await measure(runner)
    assert value(o, "cachewarden_laravel_cache_unparsable", cache="config") == 1
    [item] = problems(o)["half-written bootstrap caches"]
    assert item.startswith(f"config: {config_php} does not parse")

    resp = await client.post("/heal?action=laravel.cache_rebuild&target=shop", headers=AUTH)
    run: dict[str, Any] = (await resp.json())["run"]
    assert run["result"] == "verified", run
    assert "'feature' => 'on'" in config_php.read_text()


async def test_a_half_written_config_outside_the_app_is_reported_and_never_touched(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = make_app(tmp_path / "shop")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    neighbour = elsewhere / "keep.txt"
    neighbour.write_text("not a cache")
    outside = elsewhere / "config.php"
    outside.write_text(HALF_WRITTEN)
    write_env(root, f"FEATURE_FLAG=on\nAPP_CONFIG_CACHE={outside}\n")
    backdate(root, 60)
    client, runner = await runner_for(config_for(root, tmp_path), aiohttp_client)

    o = await measure(runner)
    assert o.details["caches"]["config"]["path"] == str(outside)
    assert value(o, "cachewarden_laravel_cache_unparsable", cache="config") == 1

    resp = await client.post("/heal?action=laravel.cache_rebuild&target=shop", headers=AUTH)
    run: dict[str, Any] = (await resp.json())["run"]
    assert run["result"] != "verified", run
    [refusal] = run["step_results"][0]["refused"]
    assert "lies outside the app root" in refusal
    assert outside.read_text() == HALF_WRITTEN
    assert sorted(p.name for p in elsewhere.iterdir()) == ["config.php", "keep.txt"]
    assert not (root / "bootstrap" / "cache" / "config.php").exists()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cachewarden-app-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


async def test_artisan_runs_as_the_apps_user_and_the_cache_keeps_its_owner(
        shared_dir: Path, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root may run artisan as another user")
    nobody = pwd.getpwnam("nobody")
    root = make_app(shared_dir / "shop")
    # The account that builds the config is in the config: the proof artisan ran as the app's user.
    (root / "config" / "built.php").write_text("<?php return ['by' => posix_getuid()];\n")
    backdate(root, 60)
    cache_all(root)
    assert "'by' => 0," in (root / "bootstrap" / "cache" / "config.php").read_text()
    for path in (root / "bootstrap" / "cache", *(root / "bootstrap" / "cache").iterdir()):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    write_env(root, "FEATURE_FLAG=off\nDB_DATABASE=shop\n")
    config = parse({"laravel": [{"name": "shop", "root": str(root), "php_user": "nobody:nogroup"}],
                    "heal": {"token_file": str(token_file(tmp_path)), "php_cli": require_laravel()}})
    client, _ = await runner_for(config, aiohttp_client)

    resp = await client.post("/heal?action=laravel.cache_rebuild&target=shop", headers=AUTH)

    run: dict[str, Any] = (await resp.json())["run"]
    assert run["result"] == "verified", run
    config_php = root / "bootstrap" / "cache" / "config.php"
    assert config_php.stat().st_uid == nobody.pw_uid, "the cache keeps its owner"
    assert f"'by' => {nobody.pw_uid}," in config_php.read_text()
    assert "'feature' => 'off'" in config_php.read_text()


async def test_with_app_env_set_in_the_pool_the_env_file_laravel_loads_is_the_one_judged(
        php_fpm: FpmFactory, tmp_path: Path, aiohttp_client: MakeClient) -> None:
    fpm = php_fpm(conf_d=EXTENSIONS, pool={"env[APP_ENV]": "staging"})
    root = make_app(tmp_path / "shop")
    (root / ".env.staging").write_text("FEATURE_FLAG=green\n")
    backdate(root, 60)
    artisan(root, "config:cache", env={"APP_ENV": "staging"})
    assert (await get(fpm.address, root, "/feature")).body == b"feature=green"
    _, runner = await runner_for(config_for(root, tmp_path, fpm), aiohttp_client)
    assert problems(await measure(runner)) == {}

    write_env(root, "FEATURE_FLAG=ignored-by-laravel\n")  # not the file Laravel loads here
    unchanged = await measure(runner)
    assert problems(unchanged) == {}
    assert value(unchanged, "cachewarden_laravel_cache_stale", cache="config") == 0

    (root / ".env.staging").write_text("FEATURE_FLAG=red\n")
    changed = await measure(runner)
    assert value(changed, "cachewarden_laravel_cache_stale", cache="config") == 1
    assert problems(changed)["cached config values"] == (".env.staging FEATURE_FLAG",)
