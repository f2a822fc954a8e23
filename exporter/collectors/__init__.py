"""Collectors, one module per subsystem, and the factory that builds them from the configuration."""

from __future__ import annotations

from exporter.collectors.base import Collector
from exporter.config import Config


def build_collectors(config: Config, enabled: dict[str, bool] | None = None) -> list[Collector]:
    """One collector per configured target of every enabled subsystem.

    `enabled` holds `--collector.X`/`--no-collector.X` overrides of `collectors.X.enabled`.
    """
    # Imported here so that importing the package does not import every driver.
    from exporter.collectors.views import ViewsCollector

    enabled = enabled or {}
    opts = config.collectors
    out: list[Collector] = []

    def on(kind: str) -> bool:
        return enabled.get(kind, opts.options(kind).enabled)

    if on("views"):
        o = opts.views
        out.extend(ViewsCollector(t, interval=o.interval, timeout=o.timeout) for t in config.laravel)
    return out


KINDS = ("views", "fpm", "opcache", "redis", "sql", "app_stats")
