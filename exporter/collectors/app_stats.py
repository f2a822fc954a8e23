"""How an application's own cache layer is measured: its JSON statistics endpoint, polled over HTTP.

    GET http://127.0.0.1:8000/cache-stats
    {"hits": 940, "misses": 60, "sets": 75, "deletes": 3, "tag_invalidations": 12, "entries": 412, "tags": 9}

becomes `cachewarden_app_cache_hits_total 940`, …, and `cachewarden_app_cache_hit_ratio 0.94`. The ratio
is computed from hits and misses: an endpoint's own `hit_rate` may be a percentage, a fraction or stale.
With no lookups yet there is no ratio, and none is exported (0 would read as "every lookup missed").
Fields the endpoint does not send are not exported; unknown fields are ignored. A body that is not a
JSON object, or longer than MAX_BODY_BYTES, is a collector failure.
"""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp

from exporter.collectors.base import Check, Collector, Observation, Verdict
from exporter.config import AppStatsTarget
from exporter.metrics import MetricSpec, counter, gauge

APP_CACHE_HITS = counter("cachewarden_app_cache_hits_total", "Cache lookups that found an entry.")
APP_CACHE_MISSES = counter("cachewarden_app_cache_misses_total", "Cache lookups that found nothing.")
APP_CACHE_SETS = counter("cachewarden_app_cache_sets_total", "Entries written to the cache.")
APP_CACHE_DELETES = counter("cachewarden_app_cache_deletes_total", "Entries deleted from the cache.")
APP_CACHE_TAG_INVALIDATIONS = counter(
    "cachewarden_app_cache_tag_invalidations_total", "Tag invalidations (each drops every entry of a tag)."
)
APP_CACHE_ENTRIES = gauge("cachewarden_app_cache_entries", "Entries held in the cache now.")
APP_CACHE_TAGS = gauge("cachewarden_app_cache_tags", "Distinct tags known to the cache now.")
APP_CACHE_HIT_RATIO = gauge(
    "cachewarden_app_cache_hit_ratio",
    "hits / (hits + misses) since the application started (0..1); absent before the first lookup.",
)
ANSWER_SHARE = 0.75  # of the collector's timeout, for the whole request
# A statistics object is a few hundred bytes; a misconfigured URL serving a page or a file must not be
# read into memory whole.
MAX_BODY_BYTES = 1 << 20

FIELDS: dict[str, MetricSpec] = {
    "hits": APP_CACHE_HITS,
    "misses": APP_CACHE_MISSES,
    "sets": APP_CACHE_SETS,
    "deletes": APP_CACHE_DELETES,
    "tag_invalidations": APP_CACHE_TAG_INVALIDATIONS,
    "entries": APP_CACHE_ENTRIES,
    "tags": APP_CACHE_TAGS,
}


class BadStatsError(ValueError):
    """The endpoint answered, but not with a JSON object of statistics."""


class AppStatsCollector(Collector):
    kind = "app_stats"
    metrics = (*FIELDS.values(), APP_CACHE_HIT_RATIO)

    def __init__(self, target: AppStatsTarget, *, interval: float, timeout: float) -> None:
        super().__init__(target.name, interval=interval, timeout=timeout)
        self._url = target.url
        self._session: aiohttp.ClientSession | None = None

    async def collect(self) -> Observation:
        if self._session is None:  # created lazily: a ClientSession belongs to the running loop
            # Below the collector's timeout, so a hung endpoint is this request's own error (named in
            # the report as such) rather than the scheduler's deadline cutting the collection off.
            total = self.timeout * ANSWER_SHARE
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total))
        async with self._session.get(self._url, headers={"Accept": "application/json"}) as resp:
            resp.raise_for_status()
            body = bytearray()
            async for chunk in resp.content.iter_any():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise BadStatsError(f"the body is longer than {MAX_BODY_BYTES} bytes")
        values = parse_stats(bytes(body))
        samples = self.new_samples()
        for field, spec in FIELDS.items():
            if field in values:
                samples.add(spec, values[field])
        checks = []
        if "hits" in values and "misses" in values:
            lookups = values["hits"] + values["misses"]
            if lookups:
                ratio = values["hits"] / lookups
                samples.add(APP_CACHE_HIT_RATIO, ratio)
                checks.append(Check("hit ratio", Verdict.OK, f"{ratio:.1%} of {lookups:.0f} lookups hit"))
            else:
                checks.append(Check("hit ratio", Verdict.OK, "no lookups yet"))
        else:
            checks.append(Check("hit ratio", Verdict.NOTE, "the endpoint reports no hits/misses"))
        return Observation(samples, checks, {"stats": values})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_stats(body: bytes) -> dict[str, float]:
    """The known numeric fields of a statistics body; raises BadStatsError for anything but an object."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadStatsError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadStatsError(f"expected a JSON object, got {type(data).__name__}")
    out: dict[str, float] = {}
    for field in FIELDS:
        value = data.get(field)
        # bool is an int in Python; true/false is not a count.
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise BadStatsError(f"{field}: not a non-negative number")
            out[field] = float(value)
        elif value is not None:
            raise BadStatsError(f"{field}: expected a number, got {type(value).__name__}")
    return out
