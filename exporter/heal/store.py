"""Where locks, dedup keys, cooldowns and failure counts live: in this process, or in Redis for a fleet.

Locks and dedup keys are **claims** held by a token (the run's id), in two phases, because a write sent
to a store that then hangs may still be applied when it resumes, long after the caller gave up:

- `claim` creates the key as *pending* for a short `ttl`, unless another claim holds it (each call is
  atomic, so two sidecars racing for a key cannot both win). A pending claim older than `stale_after`
  belonged to an admission that gave up or died (admissions finish well within that time), and a claim
  held by a token the caller knows it abandoned is its own: either is taken over at once.
- `confirm` turns the caller's pending claims into *confirmed* ones with their full TTLs, all at once and
  only if they still hold its token. Only a confirmed claim makes a resend a `duplicate`.
- `release` deletes a key only while it still holds the caller's token (a lock that expired and was
  re-taken stays).

So a claim whose outcome is unknown can never become a day-long dedup key or a ten-minute lock on its own:
unconfirmed, it lasts `ttl` at most and is taken over after `stale_after`. `recent` counts timestamps
within a window.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from exporter.config import HealConfig

KEY_PREFIX = "cachewarden:heal:"
POOL_SIZE = 8  # connections to the heal's Redis at most, shared by requests, runs and the audit stream

# What `claim` found: the key is now the caller's (pending), or held by another claim, confirmed
# (its run was admitted) or pending (its admission may still be in progress).
ClaimState = Literal["claimed", "confirmed", "pending"]
_PENDING, _CONFIRMED = "p:", "c:"


class StoreUnavailable(Exception):
    """The store cannot answer (Redis down or slow); the cause is chained."""


# What a store raises when it cannot answer: worth a retry, not a crash. Redis's own errors reach
# callers as StoreUnavailable, so that naming them here does not import redis into every process.
STORE_ERRORS: tuple[type[Exception], ...] = (OSError, TimeoutError, StoreUnavailable)


class Store(Protocol):
    async def claim(self, key: str, token: str, ttl: float, *, stale_after: float,
                    abandoned: Collection[str] = ()) -> ClaimState:
        """Claim `key` for `token` as pending for `ttl` seconds (see the module docstring)."""

    async def confirm(self, token: str, ttls: Mapping[str, float]) -> bool:
        """Confirm `token`'s claims on every key of `ttls` for its TTL, if all still hold it; else none."""

    async def release(self, key: str, token: str) -> None:
        """Delete `key` if it still holds `token`'s claim, pending or confirmed."""

    async def exists(self, key: str) -> bool: ...

    async def put(self, key: str, ttl: float) -> None:
        """Set `key` for `ttl` seconds, whatever it held."""

    async def add_event(self, key: str, at: float, window: float) -> int:
        """Record an event at `at` (again at the same `at`: once); return how many lie within `window`."""

    async def count_events(self, key: str, now: float, window: float) -> int: ...

    async def clear_events(self, key: str) -> None: ...

    @property
    def client(self) -> Redis | None:
        """The Redis client behind the store, which the audit stream shares; None in memory."""

    async def close(self) -> None: ...


def open_store(heal: HealConfig) -> Store:
    """The store `heal.redis_url` names, else this process's memory (the same for serve and the CLI)."""
    if heal.redis_url:
        return RedisStore.from_url(heal.redis_url, heal.redis_password())
    return MemoryStore()


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

    async def claim(self, key: str, token: str, ttl: float, *, stale_after: float,
                    abandoned: Collection[str] = ()) -> ClaimState:
        entry = self._live(key)
        if entry is not None:
            value, expires = entry
            state: ClaimState = "pending" if value.startswith(_PENDING) else "confirmed"
            age = ttl - (expires - self._now())
            if value[2:] not in abandoned and (state == "confirmed" or age < stale_after):
                return state
        self._sweep()
        self._keys[key] = (_PENDING + token, self._now() + ttl)
        return "claimed"

    async def confirm(self, token: str, ttls: Mapping[str, float]) -> bool:
        held = (_PENDING + token, _CONFIRMED + token)
        if any((entry := self._live(key)) is None or entry[0] not in held for key in ttls):
            return False
        for key, ttl in ttls.items():
            self._keys[key] = (_CONFIRMED + token, self._now() + ttl)
        return True

    async def release(self, key: str, token: str) -> None:
        entry = self._live(key)
        if entry is not None and entry[0] in (_PENDING + token, _CONFIRMED + token):
            del self._keys[key]

    async def exists(self, key: str) -> bool:
        return self._live(key) is not None

    async def put(self, key: str, ttl: float) -> None:
        self._keys[key] = ("", self._now() + ttl)

    async def add_event(self, key: str, at: float, window: float) -> int:
        events = [t for t in self._events.get(key, []) if t > at - window and t != at]
        events.append(at)
        self._events[key] = events
        return len(events)

    async def count_events(self, key: str, now: float, window: float) -> int:
        return sum(1 for t in self._events.get(key, []) if t > now - window)

    async def clear_events(self, key: str) -> None:
        self._events.pop(key, None)

    @property
    def client(self) -> Redis | None:
        return None

    async def close(self) -> None:
        return None


# The claims' three operations, each one script so that Redis runs it atomically. Values are
# "p:<token>" (pending) or "c:<token>" (confirmed); anything else (a key written by an older release)
# counts as confirmed. A pending claim's age is its TTL minus what is left of it, on Redis's own clock.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v then
  local state = string.sub(v, 1, 2) == 'p:' and 'pending' or 'confirmed'
  local owner = string.sub(v, 3)
  local take = false
  for i = 4, #ARGV do
    if owner == ARGV[i] then take = true end
  end
  if not take and state == 'pending' then
    take = tonumber(ARGV[2]) - redis.call('PTTL', KEYS[1]) >= tonumber(ARGV[3])
  end
  if not take then return state end
end
redis.call('SET', KEYS[1], 'p:' .. ARGV[1], 'PX', ARGV[2])
return 'claimed'
"""
_CONFIRM = """
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v ~= 'p:' .. ARGV[1] and v ~= 'c:' .. ARGV[1] then return 0 end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], 'c:' .. ARGV[1], 'PX', ARGV[i + 1])
end
return 1
"""
# Delete only while the key still holds our claim: a plain DEL could remove a lock that expired and
# was taken by another sidecar in the meantime.
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if v == 'p:' .. ARGV[1] or v == 'c:' .. ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


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
        # Sent by SHA once loaded (redis-py reloads a script that Redis no longer knows).
        self._claim = client.register_script(_CLAIM)
        self._confirm = client.register_script(_CONFIRM)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, password: str | None = None) -> RedisStore:
        # Imported here: a process whose heal does not use Redis never loads the driver.
        from redis.asyncio import BlockingConnectionPool, Redis

        from exporter.redis_options import minimal_connection

        # One bounded pool for the process: while Redis is slow, requests wait up to `timeout` for one
        # of its connections (then 503, retried) instead of each opening a socket of its own.
        pool = BlockingConnectionPool.from_url(url, password=password, max_connections=POOL_SIZE,
                                               timeout=2.0, socket_timeout=2.0, socket_connect_timeout=2.0,
                                               # RESP2 and nothing but AUTH on connect, as the Redis
                                               # collector: Redis 5.0 has no HELLO.
                                               **minimal_connection())
        return cls(Redis.from_pool(pool))

    @property
    def client(self) -> Redis:
        return self._redis

    async def claim(self, key: str, token: str, ttl: float, *, stale_after: float,
                    abandoned: Collection[str] = ()) -> ClaimState:
        with _unavailable_on_redis_error():
            state = await self._claim(keys=[KEY_PREFIX + key],
                                      args=[token, _ms(ttl), _ms(stale_after), *abandoned])
        decoded = state.decode() if isinstance(state, bytes) else str(state)
        if decoded not in ("claimed", "confirmed", "pending"):
            raise StoreUnavailable(f"unexpected claim answer {decoded[:20]!r}")
        return decoded  # type: ignore[return-value]

    async def confirm(self, token: str, ttls: Mapping[str, float]) -> bool:
        with _unavailable_on_redis_error():
            done = await self._confirm(keys=[KEY_PREFIX + k for k in ttls],
                                       args=[token, *(_ms(t) for t in ttls.values())])
        return bool(done)

    async def release(self, key: str, token: str) -> None:
        with _unavailable_on_redis_error():
            await self._release(keys=[KEY_PREFIX + key], args=[token])

    async def exists(self, key: str) -> bool:
        with _unavailable_on_redis_error():
            return bool(await self._redis.exists(KEY_PREFIX + key))

    async def put(self, key: str, ttl: float) -> None:
        with _unavailable_on_redis_error():
            await self._redis.set(KEY_PREFIX + key, "1", px=_ms(ttl))

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
