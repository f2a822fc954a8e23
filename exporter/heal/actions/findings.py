"""The findings a heal action reads from a fresh observation (types: exporter.findings).

The collector's lists are a starting point only: every action re-checks each item on disk right
before it touches it, because files change between a measurement and a fix.
"""

from __future__ import annotations

from exporter.collectors.base import Observation
from exporter.findings import OpcacheFindings, ViewFindings


def view_findings(observation: Observation | None) -> ViewFindings:
    found = observation.findings if observation else None
    return found if isinstance(found, ViewFindings) else ViewFindings()


def opcache_findings(observation: Observation | None) -> OpcacheFindings:
    found = observation.findings if observation else None
    return found if isinstance(found, OpcacheFindings) else OpcacheFindings()
