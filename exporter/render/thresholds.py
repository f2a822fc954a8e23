"""The configured alert thresholds, in the forms the rule and dashboard templates print them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from exporter.config import AlertRule, AlertsConfig


def prometheus_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (`300` -> `5m`, `1.5` -> `1500ms`), in its largest exact unit."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"a duration must be positive, got {seconds!r}")
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def promql_number(value: float) -> str:
    """A number as PromQL and Grafana JSON both read it back exactly: `1073741824`, not `1.07374e+09`."""
    if not math.isfinite(value):
        raise ValueError(f"a threshold must be finite, got {value!r}")
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True, slots=True)
class AlertThreshold:
    """One alert as the templates see it: `[[ r.threshold ]]` is PromQL text, `r.value` the number."""

    name: str
    value: float
    for_: str
    severity: str
    runbook_url: str

    @property
    def threshold(self) -> str:
        return promql_number(self.value)

    @property
    def above(self) -> str:
        """The smallest number greater than the threshold: Grafana colours a value by the last step it
        reaches (value >= step), and an alert's `>` must not paint the threshold itself red."""
        return promql_number(math.nextafter(self.value, math.inf))

    @property
    def next_integer(self) -> str:
        """The smallest count that exceeds the threshold: where a count panel turns red."""
        return promql_number(float(math.floor(self.value) + 1))


def alert_thresholds(alerts: AlertsConfig) -> dict[str, AlertThreshold]:
    return {name: _threshold(name, rule, alerts.runbook_url(name)) for name, rule in alerts.rules.items()}


def _threshold(name: str, rule: AlertRule, runbook_url: str) -> AlertThreshold:
    return AlertThreshold(
        name=name,
        value=rule.threshold,
        for_=prometheus_duration(rule.for_),
        severity=rule.severity,
        runbook_url=runbook_url,
    )
