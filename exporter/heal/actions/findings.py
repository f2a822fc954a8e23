"""The view findings a heal acts on, read from the views collector's `Observation.details`.

The collector's lists are a starting point only: every action re-checks each item on disk right
before it touches it, because files change between a measurement and a fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from exporter.collectors.base import Observation


@dataclass(frozen=True, slots=True)
class ViewFindings:
    stale: list[tuple[str, str]] = field(default_factory=list)  # (compiled path, source path)
    orphaned: list[str] = field(default_factory=list)  # compiled paths whose source is gone
    uncompiled: list[str] = field(default_factory=list)  # source paths with no compiled file


def _paths(items: Iterable[Any]) -> list[str]:
    return [i for i in items if isinstance(i, str)]


def _pairs(items: Iterable[Any]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if isinstance(item, dict):
            compiled, source = item.get("compiled"), item.get("source")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            compiled, source = item
        else:
            continue
        if isinstance(compiled, str) and isinstance(source, str):
            out.append((compiled, source))
    return out


def view_findings(observation: Observation | None) -> ViewFindings:
    if observation is None:
        return ViewFindings()
    d = observation.details
    return ViewFindings(
        stale=_pairs(d.get("stale", [])),
        orphaned=_paths(d.get("orphaned", [])),
        uncompiled=_paths(d.get("uncompiled", [])),
    )


def opcache_scripts(observation: Observation | None) -> list[str]:
    """Every script the OPcache collector found stale, suspect, missing or of another release, in shared
    memory or in the file cache, deduplicated (opcache_invalidate drops both)."""
    if observation is None:
        return []
    d = observation.details
    seen: dict[str, None] = {}
    file_cache: dict[str, Any] = d["file_cache"] if isinstance(d.get("file_cache"), dict) else {}
    for source, key in ((d, "stale"), (d, "suspect"), (d, "missing"), (d, "outside_release"),
                        (file_cache, "stale"), (file_cache, "suspect"), (file_cache, "outside_release")):
        for path in _paths(source.get(key) or []):
            seen.setdefault(path, None)
    return list(seen)
