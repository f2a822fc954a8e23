"""Fixtures shared by the integration tests."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.support.redis_server import SHARED_REDIS_URL


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    """A client of the shared Redis that scripts/start-services runs (tests keep to their own keys)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    client = Redis.from_url(SHARED_REDIS_URL)
    try:
        await client.ping()
    except OSError:
        pytest.skip("no Redis on 127.0.0.1:6379 (the test script starts one)")
    yield client
    await client.aclose()
