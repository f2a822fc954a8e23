"""The configuration file: parsed, validated (every error at once, named by its path) and resolved.

Validation is pydantic's; this package adds the messages a person can act on
(`laravel[1].root: directory /srv/shop does not exist`) and the Laravel defaults read from the app's
`.env`. Relative paths are relative to the configuration file's directory, as in Prometheus. Secrets
never live in this file: they come from `*_file` paths or environment variables.

The package, by concern: `values` (value types), `targets`, `heal`, `alerts` (the catalog) and
`loading` (the whole configuration, `parse` and `load`); everything is importable from here.
"""

from __future__ import annotations

from exporter.config.alerts import (
    ALERT_DEFAULTS,
    ALERTS_WITHOUT_THRESHOLD,
    DEFAULT_MIN_LOOKUP_RATE,
    AlertRule,
    AlertsConfig,
    Severity,
)
from exporter.config.heal import (
    MIN_TOKEN_LENGTH,
    HealCondition,
    HealConfig,
    HealPlan,
    HealWarm,
    WarmCommand,
    WarmUrl,
)
from exporter.config.loading import (
    Config,
    WebConfig,
    _format_errors,
    load,
    parse,
)
from exporter.config.targets import (
    AppStatsTarget,
    CollectorOptions,
    Collectors,
    DatabaseTarget,
    LaravelTarget,
    PhpFpmTarget,
    RedisTarget,
)
from exporter.config.values import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_PORT,
    Account,
    CommandPath,
    ConfigError,
    ConfigPath,
    Duration,
    FileMode,
    HttpUrl,
    LinkUrl,
    MetricName,
    StoreUrl,
    TargetName,
    TargetUrl,
    read_secret,
    split_listen_address,
)

__all__ = [
    "ALERTS_WITHOUT_THRESHOLD",
    "ALERT_DEFAULTS",
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_MIN_LOOKUP_RATE",
    "DEFAULT_PORT",
    "MIN_TOKEN_LENGTH",
    "Account",
    "AlertRule",
    "AlertsConfig",
    "AppStatsTarget",
    "CollectorOptions",
    "Collectors",
    "CommandPath",
    "Config",
    "ConfigError",
    "ConfigPath",
    "DatabaseTarget",
    "Duration",
    "FileMode",
    "HealCondition",
    "HealConfig",
    "HealPlan",
    "HealWarm",
    "HttpUrl",
    "LaravelTarget",
    "LinkUrl",
    "MetricName",
    "PhpFpmTarget",
    "RedisTarget",
    "Severity",
    "StoreUrl",
    "TargetName",
    "TargetUrl",
    "WarmCommand",
    "WarmUrl",
    "WebConfig",
    "_format_errors",
    "load",
    "parse",
    "read_secret",
    "split_listen_address",
]
