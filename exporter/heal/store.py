"""Where locks, dedup keys, cooldowns and failure counts live: in this process, or in Redis for a fleet.

Both stores offer the same few primitives, each atomic on its own: `claim` is SET NX PX (the one way a
key is created, so two sidecars racing for it cannot both win), `release` deletes a key only while it
still holds the caller's token, `recent` counts timestamps within a window.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

KEY_PREFIX = "cachewarden:heal:"
POOL_SIZE = 8  # connections to the heal's Redis at most, shared by requests, runs and the audit stream


class StoreUnavailable(Exception):
    """The store cannot answer (Redis down or slow); the cause is chained."""


# What a store raises when it cannot answer: worth a retry, not a crash. Redis's own errors reach
# callers as StoreUnavailable, so that naming them here does not import redis into every process.
STORE_ERRORS: tuple[type[Exception], ...] = (OSError, TimeoutError, StoreUnavailable)


class Store(Protocol):
    async def claim(self, key: str, token: str, ttl: float) -> bool:
        """Create `key` holding `token` for `ttl` seconds unless it exists; True if this call created it."""

    async def release(self, key: str, token: str) -> None:
        """Delete `key` if it still holds `token` (a lock that expired and was re-taken stays)."""

    async def exists(self, key: str) -> bool: ...

    async def put(self, key: str, ttl: float) -> None:
        """Set `key` for `ttl` seconds, whatever it held."""

    async def add_event(self, key: str, at: float, window: float) -> int:
        """Record an event at `at`; return how many events lie within `window` seconds before it."""

    async def count_events(self, key: str, now: float, window: float) -> int: ...

    async def clear_events(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """One process's state; expiry is checked on access against a monotonic clock."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._now = monotonic
        self._keys: dict[str, tuple[str, float]] = {}
        self._events: dict[str, list[float]] = {}

    def _live(self, key: str) -> tuple[str, float] | None:
        entry = self._keys.get(key)
        if entry is not None and entry[1] <= self._now():
            del self._keys[key]
            return None
        return entry

    def _sweep(self) -> None:
        # Dedup keys accumulate one per alert; drop the expired ones now and then so memory stays flat.
        if len(self._keys) > 10_000:
            now = self._now()
            self._keys = {k: e for k, e in self._keys.items() if e[1] > now}

    async def claim(self, key: str, token: str, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        self._sweep()
        self._keys[key] = (token, self._now() + ttl)
        return True

    async def release(self, key: str, token: str) -> None:
        entry = self._live(key)
        if entry is not None and entry[0] == token:
            del self._keys[key]

    async def exists(self, key: str) -> bool:
        return self._live(key) is not None

    async def put(self, key: str, ttl: float) -> None:
        self._keys[key] = ("", self._now() + ttl)

    async def add_event(self, key: str, at: float, window: float) -> int:
        events = [t for t in self._events.get(key, []) if t > at - window]
        events.append(at)
        self._events[key] = events
        return len(events)

    async def count_events(self, key: str, now: float, window: float) -> int:
        return sum(1 for t in self._events.get(key, []) if t > now - window)

    async def clear_events(self, key: str) -> None:
        self._events.pop(key, None)

    async def close(self) -> None:
        return None


# Delete only while the key still holds our token: a plain DEL could remove a lock that expired
# and was taken by another sidecar in the meantime.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@contextlib.contextmanager
def _unavailable_on_redis_error() -> Iterator[None]:
    from redis.exceptions import RedisError  # already loaded by whoever made the client

    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(type(exc).__name__) from exc


class RedisStore:
    """State shared by every sidecar that points at the same Redis."""

    def __init__(self, client: Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str, password: str | None = None) -> RedisStore:
        # Imported here: a process whose heal does not use Redis never loads the driver.
        from redis.asyncio import BlockingConnectionPool, Redis

        # One bounded pool for the process: while Redis is slow, requests wait up to `timeout` for one
        # of its connections (then 503, retried) instead of each opening a socket of its own.
        pool = BlockingConnectionPool.from_url(url, password=password, max_connections=POOL_SIZE,
                                               timeout=2.0, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(Redis.from_pool(pool))

    @property
    def client(self) -> Redis:
        return self._redis

    async def claim(self, key: str, token: str, ttl: float) -> bool:
        with _unavailable_on_redis_error():
            created = await self._redis.set(KEY_PREFIX + key, token, nx=True, px=max(1, int(ttl * 1000)))
        return bool(created)

    async def release(self, key: str, token: str) -> None:
        with _unavailable_on_redis_error():
            await self._redis.eval(_RELEASE, 1, KEY_PREFIX + key, token)

    async def exists(self, key: str) -> bool:
        with _unavailable_on_redis_error():
            return bool(await self._redis.exists(KEY_PREFIX + key))

    async def put(self, key: str, ttl: float) -> None:
        with _unavailable_on_redis_error():
            await self._redis.set(KEY_PREFIX + key, "1", px=max(1, int(ttl * 1000)))

    async def add_event(self, key: str, at: float, window: float) -> int:
        k = KEY_PREFIX + key
        with _unavailable_on_redis_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(k, "-inf", at - window)
                pipe.zadd(k, {f"{at:.6f}": at})
                pipe.zcard(k)
                pipe.expire(k, max(1, int(window) + 1))
                results = await pipe.execute()
        return int(results[2])

    async def count_events(self, key: str, now: float, window: float) -> int:
        with _unavailable_on_redis_error():
            return int(await self._redis.zcount(KEY_PREFIX + key, f"({now - window}", "+inf"))

    async def clear_events(self, key: str) -> None:
        with _unavailable_on_redis_error():
            await self._redis.delete(KEY_PREFIX + key)

    async def close(self) -> None:
        with _unavailable_on_redis_error():
            await self._redis.aclose()
