"""Collectors, one module per subsystem, and the factory that builds them from the configuration."""

from __future__ import annotations

import importlib

from exporter.collectors.base import Collector
from exporter.collectors.discovery import DiscoveryCollector, DotenvWatch
from exporter.config import Config
from exporter.discovery import Discovery, discover
from exporter.metrics import MetricSpec
from exporter.php.pools import FpmPools

# The derivations are made at start; each collection stats the .env and re-derives only when it changed,
# so this bounds how soon an edit shows.
DISCOVERY_INTERVAL = 15.0


def build_collectors(config: Config, enabled: dict[str, bool] | None = None,
                     pools: FpmPools | None = None) -> list[Collector]:
    """One collector per configured target of every enabled subsystem.

    `enabled` holds `--collector.X`/`--no-collector.X` overrides of `collectors.X.enabled`; `pools` is
    the registry of PHP-FPM endpoints the heal shares (a private one when not given).
    """
    # Imported here so that importing the package does not import every driver.
    from exporter.collectors.views import ViewsCollector

    enabled = enabled or {}
    pools = pools if pools is not None else FpmPools(config.php_fpm)
    opts = config.collectors
    out: list[Collector] = []

    def on(kind: str) -> bool:
        return enabled.get(kind, opts.options(kind).enabled)

    if on("views"):
        o = opts.views
        out.extend(ViewsCollector(t, interval=o.interval, timeout=o.timeout) for t in config.laravel)
    if on("fpm") or on("opcache"):
        out.extend(_php_fpm_collectors(config, pools, fpm=on("fpm"), opcache=on("opcache")))
    # What each app's .env implies is derived here for the collectors below and for reporting.
    kinds = {"redis": on("redis"), "sql": on("sql"), "views": on("views")}
    found = discover(config, **kinds)
    out.extend(_datastore_collectors(config, found, redis=on("redis"), sql=on("sql"),
                                     app_stats=on("app_stats")))
    for app in config.laravel:
        # With views enabled (the default) every app has one; without, an app whose .env implied nothing
        # at start has none (and an edit that adds a target waits for a restart).
        derivations = [d for d in found.derivations if d.app == app.name]
        if derivations or app.env_error:
            out.append(DiscoveryCollector(app.name, derivations, env_error=app.env_error,
                                          interval=DISCOVERY_INTERVAL, timeout=DISCOVERY_INTERVAL,
                                          watch=DotenvWatch(config, app.name, kinds, found)))
    if on("laravel_caches") and config.laravel:
        out.extend(_laravel_caches_collectors(config, pools))
    return out


def _laravel_caches_collectors(config: Config, pools: FpmPools) -> list[Collector]:
    # PHP runs in the app's pool through the endpoint its FPM and OPcache collectors already share.
    from exporter.collectors.laravel_caches import LaravelCachesCollector
    from exporter.heal.phpexec import PhpExecutor

    php = PhpExecutor(config, pools)
    o = config.collectors.laravel_caches
    return [LaravelCachesCollector(t, interval=o.interval, timeout=o.timeout, php=php,
                                   php_cli=config.heal.php_cli is not None) for t in config.laravel]


def _datastore_collectors(config: Config, found: Discovery, *, redis: bool, sql: bool,
                          app_stats: bool) -> list[Collector]:
    # Explicit targets first, then those derived from Laravel apps' .env files (explicit ones win).
    # Each driver is imported only once a target needs it: redis and sqlalchemy cost ~20 MB of RSS each.
    opts = config.collectors
    out: list[Collector] = []
    redis_targets = (*config.redis, *found.redis) if redis else ()
    if redis_targets:
        from exporter.collectors.redis_server import RedisCollector

        o = opts.redis
        out.extend(RedisCollector(t, interval=o.interval, timeout=o.timeout) for t in redis_targets)
    databases = (*config.databases, *found.databases) if sql else ()
    if databases:
        from exporter.collectors.sql import SqlCollector

        o = opts.sql
        out.extend(SqlCollector(t, interval=o.interval, timeout=o.timeout) for t in databases)
    if app_stats and config.app_stats:
        from exporter.collectors.app_stats import AppStatsCollector

        o = opts.app_stats
        out.extend(AppStatsCollector(t, interval=o.interval, timeout=o.timeout) for t in config.app_stats)
    return out


def _php_fpm_collectors(config: Config, pools: FpmPools, *, fpm: bool, opcache: bool) -> list[Collector]:
    # One endpoint per pool, shared by both collectors and the heal: its lock keeps cachewarden to one
    # FPM worker.
    from exporter.collectors.fpm import FpmCollector
    from exporter.collectors.opcache import OpcacheCollector

    out: list[Collector] = []
    for t in config.php_fpm:
        endpoint = pools.endpoint(t)
        agent = pools.agent(t, t.agent_timeout)
        if fpm:
            o = config.collectors.fpm
            out.append(FpmCollector(t, endpoint, agent, interval=o.interval, timeout=o.timeout))
        if opcache:
            o = config.collectors.opcache
            out.append(OpcacheCollector(t, agent, interval=o.interval, timeout=o.timeout))
    return out


KINDS = ("views", "fpm", "opcache", "redis", "sql", "app_stats", "laravel_caches")


# Each kind's collector class by module, so that asking about one kind imports only its driver.
_CLASSES = {"views": ("views", "ViewsCollector"), "fpm": ("fpm", "FpmCollector"),
            "opcache": ("opcache", "OpcacheCollector"), "redis": ("redis_server", "RedisCollector"),
            "sql": ("sql", "SqlCollector"), "app_stats": ("app_stats", "AppStatsCollector"),
            "laravel_caches": ("laravel_caches", "LaravelCachesCollector")}


def collector_class(kind: str) -> type[Collector]:
    module, name = _CLASSES[kind]
    cls: type[Collector] = getattr(importlib.import_module(f"exporter.collectors.{module}"), name)
    return cls


def collector_classes() -> tuple[type[Collector], ...]:
    """Every collector class, one line each: the list the metric reference is generated from."""
    kinds = [k for k in KINDS if k != "laravel_caches"]
    return (*(collector_class(k) for k in kinds), DiscoveryCollector, collector_class("laravel_caches"))


def emitted_metrics(kind: str) -> frozenset[str]:
    """The names of the metrics the collectors of one kind emit (what a heal plan can be verified by)."""
    return frozenset(s.name for s in collector_class(kind).metrics)


def all_metric_specs() -> tuple[MetricSpec, ...]:
    """Every metric cachewarden can expose: the scheduler's, the heal's, the deploy's and each collector
    class's.

    A name declared twice must be the same spec; two different families under one name would break
    the exposition, so that raises here (and in the README test) rather than at scrape time.
    """
    from exporter.deploy.records import DEPLOY_METRICS
    from exporter.heal.audit import HEAL_METRICS
    from exporter.http_server import HTTP_ERROR_METRICS
    from exporter.scheduler import SELF_METRICS
    from exporter.serving import HTTP_METRICS

    by_name: dict[str, MetricSpec] = {}
    for spec in (*SELF_METRICS, *(s for cls in collector_classes() for s in cls.metrics), *HEAL_METRICS,
                 *DEPLOY_METRICS, *HTTP_METRICS, *HTTP_ERROR_METRICS):
        seen = by_name.setdefault(spec.name, spec)
        if seen != spec:
            raise ValueError(f"{spec.name} is declared twice with different help, kind or labels")
    return tuple(by_name.values())
