"""Bootstrap caches on disk, the collector's exposition from them, and the rebuild's choices and refusals."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from exporter.collectors.base import Observation, Verdict
from exporter.collectors.laravel_caches import Inspection, LaravelCachesCollector
from exporter.config import parse
from exporter.findings import BootstrapCache, LaravelCacheFindings
from exporter.fs.bootstrap_caches import NEWER_CAP, cache_paths, scan
from exporter.heal.actions.laravel_cache_rebuild import cache_dir, caches_to_rebuild, served_stale
from exporter.heal.actions.safety import UnsafeTarget
from exporter.heal.plans import DEFAULT_PLANS, cleared
from exporter.metrics import Samples

NOW = time.time()


def touch(path: Path, age: float, text: str = "<?php return [];\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text)
    os.utime(path, (NOW - age, NOW - age))
    return path


def app(root: Path) -> Path:
    """Inputs an hour old, every cache half an hour old: nothing stale."""
    for rel in (".env", "config/app.php", "config/nested/deep.php", "routes/web.php", "composer.lock",
                "vendor/composer/installed.json", "app/Listeners/Send.php"):
        touch(root / rel, 3600)
    for d in ("config/nested", "config", "routes", "app/Listeners"):
        os.utime(root / d, (NOW - 3600, NOW - 3600))
    for name in ("config.php", "routes-v7.php", "events.php", "services.php", "packages.php"):
        touch(root / "bootstrap" / "cache" / name, 1800)
    for d in ("resources/views", "storage/framework/views"):  # what a laravel target needs to load
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def scanned(root: Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return scan(root, cache_paths(root, env or {}), now=NOW)


def test_caches_newer_than_every_input_are_not_stale(tmp_path: Path) -> None:
    result = scanned(app(tmp_path))
    assert {c: (f.present, f.stale) for c, f in result.caches.items()} == {
        c: (True, False) for c in ("config", "routes", "events", "services", "packages")}


@pytest.mark.parametrize(("changed", "stale"), [
    (".env", {"config"}),
    ("config/nested/deep.php", {"config"}),
    ("routes/web.php", {"routes"}),
    ("app/Listeners/Send.php", {"events"}),
    ("app/Providers/EventServiceProvider.php", {"events"}),
    ("composer.lock", {"packages"}),
    ("vendor/composer/installed.json", {"packages"}),
])
def test_an_input_changed_after_the_cache_makes_exactly_its_caches_stale(
        tmp_path: Path, changed: str, stale: set[str]) -> None:
    root = app(tmp_path)
    touch(root / changed, 60)
    result = scanned(root)
    assert {c for c, f in result.caches.items() if f.stale} == stale
    assert all(f.newer_inputs == (str(root / changed),) for f in result.caches.values() if f.stale)


def test_a_deleted_config_file_makes_the_config_stale_through_its_directory(tmp_path: Path) -> None:
    root = app(tmp_path)
    (root / "config" / "nested" / "deep.php").unlink()  # the cache still holds its keys
    result = scanned(root)
    assert result.caches["config"].newer_inputs == (str(root / "config" / "nested"),)


def test_files_that_are_not_php_do_not_count(tmp_path: Path) -> None:
    root = app(tmp_path)
    touch(root / "routes" / "README.md", 60)
    os.utime(root / "routes", (NOW - 3600, NOW - 3600))
    assert not scanned(root).caches["routes"].stale


def test_a_missing_cache_is_absent_not_stale(tmp_path: Path) -> None:
    root = app(tmp_path)
    (root / "bootstrap" / "cache" / "events.php").unlink()
    touch(root / "app" / "Listeners" / "Send.php", 60)
    events = scanned(root).caches["events"]
    assert (events.present, events.stale, events.mtime) == (False, False, None)


def test_many_newer_inputs_are_listed_up_to_the_cap_and_counted(tmp_path: Path) -> None:
    root = app(tmp_path)
    for i in range(NEWER_CAP + 5):
        touch(root / "routes" / f"r{i:02}.php", 60)
    newer = scanned(root).caches["routes"].newer_inputs
    assert len(newer) == NEWER_CAP + 1
    assert newer[-1] == "… 6 more"  # the 25 files and the routes directory itself


def test_app_cache_variables_move_the_caches(tmp_path: Path) -> None:
    root = app(tmp_path)
    touch(root / "storage" / "cache" / "config.php", 1800)
    result = scanned(root, {"APP_CONFIG_CACHE": "storage/cache/config.php",
                            "APP_ROUTES_CACHE": "/nowhere.php"})
    assert result.caches["config"].path == f"{root}/storage/cache/config.php"
    assert result.caches["config"].present
    assert (result.caches["routes"].path, result.caches["routes"].present) == ("/nowhere.php", False)


def test_the_signature_changes_exactly_when_a_cache_or_an_input_does(tmp_path: Path) -> None:
    root = app(tmp_path)
    first = scanned(root).signature
    assert scanned(root).signature == first
    touch(root / "config" / "app.php", 10)
    assert scanned(root).signature != first


def collector(root: Path) -> LaravelCachesCollector:
    config = parse({"laravel": [{"name": "shop", "root": str(root)}]})
    return LaravelCachesCollector(config.laravel[0], interval=15, timeout=10)


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    wanted = ("shop", *labels.values())
    return next((v for s, lv, v in samples.values if s.name == name and lv == wanted), None)


def test_without_php_only_what_the_files_say_is_exported(tmp_path: Path) -> None:
    root = app(tmp_path)
    (root / "bootstrap" / "cache" / "routes-v7.php").unlink()
    touch(root / ".env", 60)
    c = collector(root)
    o = c.observe(c.scan_files(), None, None, now=NOW)
    s = o.samples
    assert sample(s, "cachewarden_laravel_cache_stale", cache="config") == 1
    assert sample(s, "cachewarden_laravel_cache_age_seconds", cache="config") == pytest.approx(1800)
    assert sample(s, "cachewarden_laravel_cache_present", cache="routes") == 0
    assert sample(s, "cachewarden_laravel_cache_present", cache="services") == 1
    assert sample(s, "cachewarden_laravel_cache_stale", cache="services") is None
    # Absent is not zero: no route cache, no PHP.
    assert sample(s, "cachewarden_laravel_cache_stale", cache="routes") is None
    assert sample(s, "cachewarden_laravel_cache_unparsable", cache="config") is None
    assert sample(s, "cachewarden_laravel_config_keys_differing") is None
    note = next(ch for ch in o.checks if ch.name == "cached config values")
    assert note.verdict is Verdict.NOTE


def test_an_inspection_names_keys_and_half_written_files(tmp_path: Path) -> None:
    root = app(tmp_path)
    c = collector(root)
    files = c.scan_files()
    inspection = Inspection(files.signature, parse={"config": "does not parse (line 3)", "routes": None},
                            env_file=".env", env_keys=["DB_PASSWORD", "FEATURE_FLAG"],
                            config_keys=["app.locale"])
    o = c.observe(files, inspection, None, now=NOW)
    assert sample(o.samples, "cachewarden_laravel_config_keys_differing") == 3
    assert sample(o.samples, "cachewarden_laravel_cache_unparsable", cache="config") == 1
    assert sample(o.samples, "cachewarden_laravel_cache_unparsable", cache="routes") == 0
    failing = {ch.name: ch.items for ch in o.checks if not ch.ok}
    assert failing["cached config values"] == (".env DB_PASSWORD", ".env FEATURE_FLAG", "config app.locale")
    [half] = failing["half-written bootstrap caches"]
    assert half.startswith(f"config: {root}/bootstrap/cache/config.php does not parse")
    assert o.details["unparsable"] == ["config"]


def observation(**caches: BootstrapCache) -> Observation:
    return Observation(Samples("shop"), findings=LaravelCacheFindings(caches, ("routes",)))


def test_only_present_caches_that_are_stale_or_half_written_are_rebuilt_in_order() -> None:
    o = observation(
        routes=BootstrapCache("/a/routes-v7.php", present=True, stale=True),
        config=BootstrapCache("/a/config.php", present=True, unparsable=True),
        events=BootstrapCache("/a/events.php", present=False),
        services=BootstrapCache("/a/services.php", present=True, stale=True),
        packages=BootstrapCache("/a/packages.php", present=True),
    )
    assert caches_to_rebuild(o) == ["config", "routes", "packages", "services"]
    assert served_stale(o) == [("routes", "/a/routes-v7.php")]
    assert caches_to_rebuild(None) == []


def test_a_cache_directory_outside_the_root_or_behind_a_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    for d in ("bootstrap/cache", "resources/views", "storage/framework/views"):
        (root / d).mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    laravel = parse({"laravel": [{"name": "shop", "root": str(root)}]}).laravel[0]

    cache = root / "bootstrap" / "cache"
    assert cache_dir(laravel, cache / "config.php").path == cache
    with pytest.raises(UnsafeTarget, match="outside the app root"):
        cache_dir(laravel, tmp_path / "elsewhere" / "config.php")
    with pytest.raises(UnsafeTarget, match="outside the app root"):
        cache_dir(laravel, Path(f"{root}0"))  # APP_CONFIG_CACHE=0 resolves to base path + "0"
    with pytest.raises(UnsafeTarget, match="symlink"):
        cache_dir(laravel, root / "linked" / "config.php")
    with pytest.raises(UnsafeTarget, match="does not name a file"):
        cache_dir(laravel, Path(f"{cache}/.."))  # APP_CONFIG_CACHE=bootstrap/cache/..


def test_the_config_plan_clears_on_the_config_series_only() -> None:
    plan = DEFAULT_PLANS["CachewardenLaravelConfigStale"]
    from exporter.collectors.laravel_caches import CACHE_STALE, CACHE_UNPARSABLE, CONFIG_KEYS_DIFFERING

    s = Samples("shop")
    s.add(CACHE_STALE, 0, cache="config")
    s.add(CACHE_STALE, 1, cache="routes")  # another alert's business
    s.add(CACHE_UNPARSABLE, 0, cache="config")
    assert not cleared(plan.clear_when, Observation(s)), "keys_differing unmeasured: not cleared"
    s.add(CONFIG_KEYS_DIFFERING, 0)
    assert cleared(plan.clear_when, Observation(s))
    s.add(CACHE_STALE, 1, cache="config")
    assert not cleared(plan.clear_when, Observation(s))
