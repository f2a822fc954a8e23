"""The application cache collector against a real aiohttp server answering like an app's stats endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from exporter.collectors.app_stats import (
    APP_CACHE_ENTRIES,
    APP_CACHE_HIT_RATIO,
    APP_CACHE_HITS,
    APP_CACHE_TAG_INVALIDATIONS,
    MAX_BODY_BYTES,
    AppStatsCollector,
    BadStatsError,
)
from exporter.collectors.base import Verdict
from exporter.config import AppStatsTarget
from exporter.scheduler import Scheduler

pytestmark = pytest.mark.integration


async def stats_server(aiohttp_server: AiohttpServer, body: Any) -> str:
    async def handler(request: web.Request) -> web.StreamResponse:
        if isinstance(body, bytes):
            return web.Response(body=body, content_type="application/json")
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/cache-stats", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/cache-stats"))


async def test_fields_become_series_and_the_ratio_is_computed_not_trusted(
    aiohttp_server: AiohttpServer,
) -> None:
    url = await stats_server(aiohttp_server, {
        "hits": 30, "misses": 10, "sets": 12, "deletes": 1, "tag_invalidations": 4, "entries": 9,
        "tags": 2, "hit_rate": 12.5, "driver": "redis",
    })
    collector = AppStatsCollector(AppStatsTarget(name="shop", url=url), interval=5, timeout=2)
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    assert obs.samples.value(APP_CACHE_HITS) == 30
    assert obs.samples.value(APP_CACHE_TAG_INVALIDATIONS) == 4
    assert obs.samples.value(APP_CACHE_ENTRIES) == 9
    assert obs.samples.value(APP_CACHE_HIT_RATIO) == pytest.approx(0.75)


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[1, 2]", b'{"hits": "many"}'])
async def test_a_body_that_is_not_a_stats_object_fails_the_collector(
    aiohttp_server: AiohttpServer, body: bytes,
) -> None:
    url = await stats_server(aiohttp_server, body)
    collector = AppStatsCollector(AppStatsTarget(name="shop", url=url), interval=5, timeout=2)
    try:
        with pytest.raises(BadStatsError):
            await collector.collect()
        [status] = await Scheduler([collector]).collect_all()
    finally:
        await collector.close()
    assert status.up is False
    assert status.error is not None
    assert "BadStatsError" in status.error


async def test_before_the_first_lookup_no_hit_ratio_is_exported(aiohttp_server: AiohttpServer) -> None:
    url = await stats_server(aiohttp_server, {"hits": 0, "misses": 0, "entries": 0})
    collector = AppStatsCollector(AppStatsTarget(name="shop", url=url), interval=5, timeout=2)
    try:
        obs = await collector.collect()
    finally:
        await collector.close()
    assert obs.samples.value(APP_CACHE_HITS) == 0
    assert obs.samples.value(APP_CACHE_HIT_RATIO) is None
    [check] = obs.checks
    assert (check.verdict, check.summary) == (Verdict.OK, "no lookups yet")


async def test_a_body_over_the_cap_fails_without_being_read_whole(aiohttp_server: AiohttpServer) -> None:
    # Valid JSON, padded past the cap: only the length can refuse it.
    body = b'{"hits": 1, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    url = await stats_server(aiohttp_server, body)
    collector = AppStatsCollector(AppStatsTarget(name="shop", url=url), interval=5, timeout=5)
    try:
        with pytest.raises(BadStatsError, match="longer than"):
            await collector.collect()
    finally:
        await collector.close()


async def test_an_endpoint_that_never_answers_is_the_requests_own_timeout(
    aiohttp_server: AiohttpServer,
) -> None:
    hold = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await hold.wait()  # set only when the test ends
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/cache-stats", handler)
    server = await aiohttp_server(app)
    collector = AppStatsCollector(AppStatsTarget(name="shop", url=str(server.make_url("/cache-stats"))),
                                  interval=5, timeout=0.4)
    scheduler = Scheduler([collector])
    try:
        status = await scheduler.collect("app_stats", "shop")
    finally:
        hold.set()
        await scheduler.close()
    assert status.up is False
    # aiohttp's own timeout ended it, before the scheduler's deadline would have
    assert status.error is not None
    assert not status.error.startswith("timed out after")
    assert status.duration < 0.4
