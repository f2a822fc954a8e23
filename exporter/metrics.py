"""Metric specifications and the per-collection sample buffer.

Collectors do not touch a prometheus registry. Each declares its metrics as `MetricSpec` constants and
fills a `Samples` buffer during one collection; the scheduler keeps the last complete buffer per
(collector, target) and `SnapshotCollector` exposes them, merged by metric name, through
prometheus_client's own exposition. That is what lets `/metrics` serve a finished snapshot instantly
while a slow walk or query is still running, and drop a failed collector's values atomically.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector as RegistryCollector

from exporter.text import unicode_safe

NAMESPACE = "cachewarden_"


class Kind(enum.Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: its exposed name (counters end in `_total`), help text and extra labels.

    Every family also carries the `target` label, so it is not listed in `labels`.
    """

    name: str
    help: str
    kind: Kind = Kind.GAUGE
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.startswith(NAMESPACE):
            raise ValueError(f"{self.name}: metric names start with {NAMESPACE}")
        if self.kind is Kind.COUNTER and not self.name.endswith("_total"):
            raise ValueError(f"{self.name}: a counter's name ends in _total")
        if self.kind is Kind.INFO and not self.name.endswith("_info"):
            raise ValueError(f"{self.name}: an info metric's name ends in _info")
        if "target" in self.labels:
            raise ValueError(f"{self.name}: target is implicit, do not list it")

    @property
    def family_name(self) -> str:
        """The name prometheus_client wants: without the `_total`/`_info` suffix it appends itself."""
        if self.kind is Kind.COUNTER:
            return self.name.removesuffix("_total")
        if self.kind is Kind.INFO:
            return self.name.removesuffix("_info")
        return self.name

    @property
    def all_labels(self) -> tuple[str, ...]:
        return ("target", *self.labels)


def gauge(name: str, help: str, labels: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(name, help, Kind.GAUGE, labels)


def counter(name: str, help: str, labels: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(name, help, Kind.COUNTER, labels)


def info(name: str, help: str, labels: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(name, help, Kind.INFO, labels)


@dataclass(slots=True)
class Samples:
    """Values recorded by one collection of one target."""

    target: str
    values: list[tuple[MetricSpec, tuple[str, ...], float]] = field(default_factory=list)

    # Positional-only, so that `value` can also be a label name (cachewarden_opcache_setting_info has one).
    def add(self, spec: MetricSpec, value: float, /, **labels: str) -> None:
        if set(labels) != set(spec.labels):
            raise ValueError(f"{spec.name}: labels {sorted(labels)} != declared {sorted(spec.labels)}")
        if spec.kind is Kind.INFO:
            value = 1.0
        # Label values are often names from outside (paths, SQL text): one that is not UTF-8 would make
        # the exposition unencodable and every scrape fail.
        label_values = (unicode_safe(self.target), *(unicode_safe(labels[k]) for k in spec.labels))
        self.values.append((spec, label_values, float(value)))

    def add_info(self, spec: MetricSpec, /, **labels: str) -> None:
        self.add(spec, 1.0, **labels)

    def value(self, spec: MetricSpec, /, **labels: str) -> float | None:
        """The recorded value of one series, for tests and for reports built from the same numbers."""
        wanted = (unicode_safe(self.target), *(unicode_safe(labels[k]) for k in spec.labels))
        for s, lv, v in self.values:
            if s is spec and lv == wanted:
                return v
        return None


def families(buffers: Iterable[Samples]) -> Iterator[Metric]:
    """Merge the buffers of every target into one family per metric name."""
    merged: dict[str, tuple[MetricSpec, list[tuple[tuple[str, ...], float]]]] = {}
    for buf in buffers:
        for spec, label_values, value in buf.values:
            merged.setdefault(spec.name, (spec, []))[1].append((label_values, value))
    for spec, rows in merged.values():
        fam: Metric
        if spec.kind is Kind.COUNTER:
            fam = CounterMetricFamily(spec.family_name, spec.help, labels=spec.all_labels)
        elif spec.kind is Kind.INFO:
            fam = InfoMetricFamily(spec.family_name, spec.help, labels=("target",))
            for label_values, _ in rows:
                fam.add_metric(list(label_values[:1]), dict(zip(spec.labels, label_values[1:], strict=True)))
            yield fam
            continue
        else:
            fam = GaugeMetricFamily(spec.family_name, spec.help, labels=spec.all_labels)
        for label_values, value in rows:
            fam.add_metric(list(label_values), value)
        yield fam


class SnapshotSource(Protocol):
    def snapshot(self) -> list[Samples]: ...


class SnapshotCollector(RegistryCollector):
    """Adapter registered in a CollectorRegistry: yields whatever the source holds right now."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        return families(self._source.snapshot())
