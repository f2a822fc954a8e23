"""Laravel's bootstrap caches (config, routes, events, services, packages): present, age, stale, right.

Staleness is read from the files (exporter.fs.bootstrap_caches): a cache older than any of its inputs.
What only PHP can tell is asked of PHP (exporter/heal/php/inspect_bootstrap_caches.php), in the app's
FPM pool when one is linked (`php_fpm[].laravel`), else with `heal.php_cli`; the sidecar never runs
the app's code itself:
- whether each cache file parses (a half-written one does not, and every request then fails);
- which `.env` keys differ between the cached config and the `.env` on disk, by name only;
- inside FPM, whether OPcache serves another version of a cache file than the one on disk: exact,
  whatever validate_timestamps says, since these files are data (the served copy is included, the
  disk's evaluated from its text, and the two compared).
The parse check and the `.env` comparison run again only when a cache or one of its inputs changed
(mtime, size or presence): an unchanged app costs a few hundred `stat` calls and no PHP. Without any
PHP the key comparison and parse check are absent (not zero) and a note says why.

Sample exposition for one app:

    cachewarden_laravel_cache_present{cache="config",target="shop"} 1.0
    cachewarden_laravel_cache_stale{cache="config",target="shop"} 1.0
    cachewarden_laravel_cache_age_seconds{cache="config",target="shop"} 86400.0
    cachewarden_laravel_cache_size_bytes{cache="config",target="shop"} 17230.0
    cachewarden_laravel_cache_unparsable{cache="config",target="shop"} 0.0
    cachewarden_laravel_cache_served_stale{cache="config",target="shop"} 0.0
    cachewarden_laravel_config_keys_differing{target="shop"} 2.0
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from exporter.collectors.base import Check, Collector, Observation, Verdict
from exporter.config import LaravelTarget
from exporter.findings import BootstrapCache, LaravelCacheFindings
from exporter.fs.bootstrap_caches import CACHES, JUDGED, CachesScan, cache_paths, dotenv_values, scan
from exporter.metrics import MetricSpec, Samples, counter, gauge

if TYPE_CHECKING:
    from exporter.heal.phpexec import PhpExecutor

SCRIPT = "inspect_bootstrap_caches.php"
DEBIAN_AUTOLOAD = "/usr/share/php/Illuminate/autoload.php"

CACHE_PRESENT = gauge("cachewarden_laravel_cache_present", "1 if the bootstrap cache file exists.",
                      ("cache",))
CACHE_STALE = gauge(
    "cachewarden_laravel_cache_stale",
    "1 if the cache is older than any of its inputs (.env, config/, routes/, listeners, composer files); "
    "absent when the cache is, and for services (Laravel checks that one itself on every boot).",
    ("cache",),
)
CACHE_AGE = gauge("cachewarden_laravel_cache_age_seconds", "Seconds since the cache file was written.",
                  ("cache",))
CACHE_SIZE = gauge("cachewarden_laravel_cache_size_bytes", "Size of the cache file.", ("cache",))
CACHE_UNPARSABLE = gauge(
    "cachewarden_laravel_cache_unparsable",
    "1 if the cache file does not parse as PHP (half-written); absent without PHP to check it.",
    ("cache",),
)
CACHE_SERVED_STALE = gauge(
    "cachewarden_laravel_cache_served_stale",
    "1 if PHP-FPM's OPcache serves another version of the cache file than the one on disk; only with a "
    "linked pool running OPcache, for files that parse.",
    ("cache",),
)
CONFIG_KEYS_DIFFERING = gauge(
    "cachewarden_laravel_config_keys_differing",
    "Keys whose cached config value differs from a fresh load: .env keys, plus config keys no .env key "
    "explains; absent without PHP or a cached config.",
)
PHP_INSPECTIONS = counter(
    "cachewarden_laravel_cache_inspections_total",
    "PHP runs that parsed the caches and compared the cached config (only after something changed).",
)


@dataclass(slots=True)
class Inspection:
    """What the last PHP run found, and for which state of the files."""

    signature: tuple[tuple[str, int, int], ...]
    parse: dict[str, str | None] = field(default_factory=dict)  # cache -> reason it does not parse
    env_file: str | None = None
    env_keys: list[str] | None = None
    config_keys: list[str] | None = None
    config_error: str | None = None


def autoload_files(root: Path) -> list[str]:
    """The app's own framework when it has one (vendor/), else Debian's."""
    vendor = root / "vendor" / "autoload.php"
    return [str(vendor)] if vendor.is_file() else [DEBIAN_AUTOLOAD]


class LaravelCachesCollector(Collector):
    kind: ClassVar[str] = "laravel_caches"
    metrics: ClassVar[tuple[MetricSpec, ...]] = (
        CACHE_PRESENT, CACHE_STALE, CACHE_AGE, CACHE_SIZE, CACHE_UNPARSABLE, CACHE_SERVED_STALE,
        CONFIG_KEYS_DIFFERING, PHP_INSPECTIONS,
    )

    def __init__(self, target: LaravelTarget, *, interval: float, timeout: float,
                 php: PhpExecutor | None = None, php_cli: bool = False) -> None:
        super().__init__(target.name, interval=interval, timeout=timeout)
        self.app = target
        self.root = target.root
        self.php = php
        self.pool = php.pool_for_app(target.name) if php is not None else None
        self.php_cli = php_cli
        self.inspections = 0
        self._last: Inspection | None = None
        self._env_stat: tuple[int, int] | bool | None = False  # False: never read
        self._env: dict[str, str | None] = {}
        # The environment file Laravel loads, relative to the root: `.env` until PHP, which sees the
        # app's real environment (APP_ENV), says `.env.{APP_ENV}`.
        self._env_file = ".env"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"caches-{target.name}")

    @property
    def has_php(self) -> bool:
        return self.pool is not None or (self.php is not None and self.php_cli)

    async def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def collect(self) -> Observation:
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(self._thread, self.scan_files)
        served: dict[str, Any] | None = None
        if self.has_php and (self._last is None or self._last.signature != files.signature):
            self._last, served = await self._inspect(files, config=True)
            if self._last.env_file not in (None, self._env_file):
                # Laravel loads another file than the one looked at (`.env.{APP_ENV}`): its variables
                # place the caches and its mtime dates the config. Looked at again, without PHP.
                self._env_file, self._env_stat = self._last.env_file, False
                files = await loop.run_in_executor(self._thread, self.scan_files)
                self._last.signature = files.signature
        elif self.pool is not None:
            # Nothing changed on disk, but OPcache's copy may have: only the served look runs.
            _, served = await self._inspect(files, config=False)
        return self.observe(files, self._last if self.has_php else None, served)

    def scan_files(self) -> CachesScan:
        """Stat the caches and inputs; the env file is re-read (for APP_*_CACHE) only when it changed."""
        env_path = self.root / self._env_file
        try:
            st = os.stat(env_path)
            key: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key != self._env_stat:
            self._env = dotenv_values(env_path)
            self._env_stat = key
        return scan(self.root, cache_paths(self.root, self._env), env_files=(self._env_file,))

    async def _inspect(self, files: CachesScan, *, config: bool) -> tuple[Inspection, dict[str, Any] | None]:
        assert self.php is not None
        args = {
            "autoload": await asyncio.to_thread(autoload_files, self.root),
            "root": str(self.root),
            "paths": {c: f.path for c, f in files.caches.items()},
            "config": config,
            "served": self.pool is not None,
        }
        if self.pool is not None:
            result = await self.php.in_fpm(self.pool, SCRIPT, args, self.timeout)
        else:
            result = await self.php.in_cli(SCRIPT, args, self.timeout)
        if config:
            self.inspections += 1
        if not isinstance(result, dict):
            raise RuntimeError(f"{SCRIPT}: unexpected answer")
        inspection = Inspection(files.signature)
        parse = result.get("parse")
        if isinstance(parse, dict):
            inspection.parse = {str(k): (str(v) if v is not None else None) for k, v in parse.items()}
        cfg = result.get("config")
        if isinstance(cfg, dict):
            if "error" in cfg:
                inspection.config_error = str(cfg["error"])
            else:
                inspection.env_file = str(cfg.get("env_file", ".env"))
                inspection.env_keys = [str(k) for k in cfg.get("env_keys", [])]
                inspection.config_keys = [str(k) for k in cfg.get("config_keys", [])]
        served = result.get("served")
        return inspection, served if isinstance(served, dict) else None

    def observe(self, files: CachesScan, inspection: Inspection | None,
                served: dict[str, Any] | None, *, now: float | None = None) -> Observation:
        now = time.time() if now is None else now
        s = self.new_samples()
        for cache in CACHES:
            f = files.caches[cache]
            s.add(CACHE_PRESENT, f.present, cache=cache)
            if not f.present:
                continue
            if cache in JUDGED:
                s.add(CACHE_STALE, f.stale, cache=cache)
            s.add(CACHE_AGE, max(0.0, now - (f.mtime or now)), cache=cache)
            s.add(CACHE_SIZE, f.size or 0, cache=cache)
            if inspection is not None and cache in inspection.parse:
                s.add(CACHE_UNPARSABLE, inspection.parse[cache] is not None, cache=cache)
        served_stale = self._served(s, files, served)
        keys: list[str] | None = None
        if inspection is not None and inspection.env_keys is not None and inspection.config_keys is not None:
            keys = inspection.env_keys + inspection.config_keys
            s.add(CONFIG_KEYS_DIFFERING, len(keys))
        s.add(PHP_INSPECTIONS, self.inspections)
        checks = self._checks(files, inspection, served_stale)
        details = {
            "root": files.root,
            "caches": {c: {"path": f.path, "present": f.present, "stale": f.stale,
                           "newer_inputs": list(f.newer_inputs),
                           "unparsable": inspection.parse.get(c) if inspection else None}
                       for c, f in files.caches.items()},
            "stale": [c for c, f in files.caches.items() if f.present and f.stale],
            "unparsable": [c for c, f in files.caches.items()
                           if f.present and inspection is not None and inspection.parse.get(c)],
            "served_stale": served_stale,
            "env_keys_differing": inspection.env_keys if inspection else None,
            "config_keys_differing": inspection.config_keys if inspection else None,
        }
        findings = LaravelCacheFindings({c: BootstrapCache(
            str(f.path), f.present, bool(f.stale),
            bool(inspection is not None and inspection.parse.get(c))) for c, f in files.caches.items()},
            tuple(served_stale))
        return Observation(s, checks, details, findings)

    def _served(self, s: Samples, files: CachesScan, served: dict[str, Any] | None) -> list[str]:
        if not served or not served.get("enabled"):
            return []
        caches = served.get("caches") or {}
        stale = []
        for cache in CACHES:
            entry = caches.get(cache)
            if files.caches[cache].present and isinstance(entry, dict):
                differs = entry.get("differs") is True
                s.add(CACHE_SERVED_STALE, differs, cache=cache)
                if differs:
                    stale.append(cache)
        return stale

    def _checks(self, files: CachesScan, inspection: Inspection | None,
                served_stale: list[str]) -> list[Check]:
        present = [c for c in CACHES if files.caches[c].present]
        checks = [Check("bootstrap caches", Verdict.OK if present else Verdict.NOTE,
                        f"cached: {', '.join(present)}" if present else "no bootstrap cache is present")]
        # Older than .env or config/ is only a guess at wrong values; where PHP compared them and found
        # none differing, it is a note (the config alert says the same).
        vouched = (inspection is not None and inspection.env_keys == [] and inspection.config_keys == []
                   and inspection.parse.get("config") is None)
        stale = [c for c in present if files.caches[c].stale]
        stale_items = [f"{c}: {files.caches[c].path} is older than {', '.join(files.caches[c].newer_inputs)}"
                       for c in stale if not (c == "config" and vouched)]
        checks.append(Check.from_items("stale bootstrap caches", stale_items,
                                       "no cache is older than its inputs",
                                       "{n} cache(s) older than their inputs"))
        if vouched and "config" in stale:
            checks.append(Check("config cache older than its inputs", Verdict.NOTE,
                                "the config cache is older than .env or config/, but every value matches"))
        if inspection is None:
            if not files.caches["config"].present:
                return checks
            checks.append(Check("cached config values", Verdict.NOTE,
                                "not compared: no PHP (link a php_fpm target with php_fpm[].laravel or set "
                                "heal.php_cli)"))
            return checks
        unparsable = [f"{c}: {files.caches[c].path} {inspection.parse[c]}" for c in present
                      if inspection.parse.get(c)]
        checks.append(Check.from_items("half-written bootstrap caches", unparsable,
                                       "every cache file parses",
                                       "{n} cache file(s) do not parse: every request fails"))
        if inspection.config_error:
            checks.append(Check("cached config values", Verdict.PROBLEM, inspection.config_error))
        elif inspection.env_keys is not None and inspection.config_keys is not None:
            items = [f"{inspection.env_file or '.env'} {k}" for k in inspection.env_keys]
            items += [f"config {k}" for k in inspection.config_keys]
            checks.append(Check.from_items("cached config values", items,
                                           "the cached config matches the .env and config files on disk",
                                           "{n} key(s) differ between the cached config and the files"))
        if self.pool is not None:
            checks.append(Check.from_items("served bootstrap caches", served_stale,
                                           "OPcache serves the caches as they are on disk",
                                           "{n} cache(s) served by OPcache in an older version than on disk"))
        return checks
