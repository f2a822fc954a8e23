"""The alert catalog: every shipped alert's default threshold, hold and severity, and its overrides.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
)

from exporter.config.values import (
    Duration,
    LinkUrl,
    _Model,
)

Severity = Literal["critical", "warning", "info"]


class AlertRule(_Model):
    """One alert's tunables: the value its expression compares against, how long the condition must
    hold before it fires (`for`), and its severity. Alerts on a 0/1 flag have no threshold: setting one
    is refused (see ALERTS_WITHOUT_THRESHOLD) rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    threshold: float = 0.0
    for_: Duration = Field(default=300.0, alias="for")
    severity: Severity = "warning"


def _rule(threshold: float, hold: str, severity: Severity) -> AlertRule:
    return AlertRule.model_validate({"threshold": threshold, "for": hold, "severity": severity})


# Every alert the shipped rules define, with its defaults. Ratios are 0..1; rates are per second.
ALERT_DEFAULTS: dict[str, AlertRule] = {
    # compiled views
    "CachewardenViewsStale": _rule(0, "5m", "warning"),
    "CachewardenViewsOrphaned": _rule(0, "15m", "warning"),
    "CachewardenViewsUncompiled": _rule(0, "30m", "warning"),
    "CachewardenViewsDirNotWritable": _rule(0, "2m", "critical"),
    "CachewardenViewsDiskLow": _rule(1 << 30, "10m", "warning"),  # free bytes
    # OPcache
    "CachewardenOpcacheDisabled": _rule(0, "10m", "warning"),
    "CachewardenOpcacheStaleScripts": _rule(0, "2m", "critical"),
    "CachewardenOpcacheMissingScripts": _rule(0, "10m", "warning"),
    "CachewardenCodeRevisionDrift": _rule(0, "5m", "critical"),
    "CachewardenOpcacheOutsideRelease": _rule(0, "5m", "critical"),  # scripts of a superseded release
    "CachewardenOpcacheFileCacheStale": _rule(0, "2m", "critical"),  # stale entries, validate_timestamps=0
    "CachewardenOpcachePreloadStale": _rule(0, "5m", "critical"),  # preloaded scripts needing a restart
    "CachewardenOpcacheMemoryFull": _rule(0.9, "10m", "warning"),  # 1 - free / total (used or wasted)
    "CachewardenOpcacheKeysFull": _rule(0.9, "10m", "warning"),  # used / max
    "CachewardenOpcacheRestarts": _rule(0, "1m", "warning"),  # restarts for lack of room in 1h
    "CachewardenOpcacheHitRatioLow": _rule(0.9, "15m", "warning"),
    # Laravel's bootstrap caches
    "CachewardenLaravelConfigStale": _rule(0, "5m", "critical"),
    "CachewardenLaravelRoutesStale": _rule(0, "5m", "critical"),
    "CachewardenLaravelPackagesStale": _rule(0, "10m", "warning"),
    # PHP-FPM
    "CachewardenFpmDown": _rule(0, "2m", "critical"),
    "CachewardenFpmMaxChildrenReached": _rule(0, "1m", "warning"),  # increase over 5m
    "CachewardenFpmListenQueue": _rule(0, "2m", "warning"),
    "CachewardenFpmStatusTimeouts": _rule(0, "1m", "warning"),  # status requests unanswered in 5m
    # Redis
    "CachewardenRedisDown": _rule(0, "2m", "critical"),
    "CachewardenRedisHitRatioLow": _rule(0.8, "15m", "warning"),
    "CachewardenRedisEvictions": _rule(0, "10m", "warning"),  # evictions per second
    "CachewardenRedisClientsNearMax": _rule(0.8, "5m", "warning"),  # connected / maxclients
    # SQL
    "CachewardenDbDown": _rule(0, "2m", "critical"),
    "CachewardenDbConnectionsHigh": _rule(0.8, "5m", "warning"),  # connections / max_connections
    "CachewardenDbAbortedConnections": _rule(0.1, "10m", "warning"),  # aborted per second
    "CachewardenDbSlowQueries": _rule(0, "10m", "warning"),  # statement shapes over slow_threshold
    # cachewarden itself
    "CachewardenDown": _rule(0, "5m", "critical"),
    "CachewardenCollectorDown": _rule(0, "5m", "warning"),
    "CachewardenTargetConfigProblem": _rule(0, "5m", "warning"),  # a target the .env implies, not built
    "CachewardenHealFailing": _rule(0, "1m", "warning"),  # failed runs in 30m
    "CachewardenHealIneffective": _rule(0, "1m", "warning"),  # plans given up as not fixing anything
}

# Alerts on a 0/1 flag (or on a target being absent): their expressions compare with no number.
ALERTS_WITHOUT_THRESHOLD = frozenset({
    "CachewardenViewsDirNotWritable", "CachewardenOpcacheDisabled", "CachewardenFpmDown",
    "CachewardenRedisDown", "CachewardenDbDown", "CachewardenDown", "CachewardenCollectorDown",
    "CachewardenTargetConfigProblem",
    "CachewardenLaravelConfigStale", "CachewardenLaravelRoutesStale", "CachewardenLaravelPackagesStale",
})

# Below this many lookups per second a hit ratio says nothing: an idle cache is not a cold one.
DEFAULT_MIN_LOOKUP_RATE = 1.0


class AlertsConfig(_Model):
    """What `cachewarden render` needs: runbook links and each alert's thresholds.

    `rules` lists only the alerts to change and only the keys to change; the rest keep their defaults.
    """

    runbook_base_url: LinkUrl = "https://github.com/cachewarden/cachewarden/blob/main/docs/runbooks"
    min_lookup_rate: float = Field(default=DEFAULT_MIN_LOOKUP_RATE, ge=0)
    # The Prometheus job(s) scraping cachewarden, a regex: CachewardenDown watches their `up`.
    job: str = Field(default="cachewarden", min_length=1)
    rules: dict[str, AlertRule] = Field(default_factory=lambda: dict(ALERT_DEFAULTS))

    def runbook_url(self, alert: str) -> str:
        """Where the runbook of `alert` is: the rendered rules' `runbook_url`, and the status page's link."""
        return f"{self.runbook_base_url.rstrip('/')}/{alert}.md"

    @field_validator("rules", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        unknown = sorted(set(value) - set(ALERT_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown alert {unknown[0]!r} (known: {', '.join(ALERT_DEFAULTS)})")
        for name in sorted(ALERTS_WITHOUT_THRESHOLD & set(value)):
            if isinstance(value[name], dict) and "threshold" in value[name]:
                raise ValueError(f"{name}.threshold: {name} compares with no number, so a threshold would "
                                 "do nothing (remove the key)")
        merged: dict[str, Any] = {}
        for name, default in ALERT_DEFAULTS.items():
            given = value.get(name)
            if isinstance(given, dict):
                merged[name] = {**default.model_dump(by_alias=True), **given}
            else:
                merged[name] = default if given is None else given
        return merged
