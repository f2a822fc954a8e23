"""How a Redis server is measured: one `INFO` per collection, never KEYS or SCAN.

    cachewarden_redis_up{target="cache"} 1
    cachewarden_redis_keyspace_hits_total{target="cache"} 1042
    cachewarden_redis_db_keys{target="cache",db="0"} 17

An unreachable server is a finding about the target, not a failure of the collector: it yields
`cachewarden_redis_up 0` and a PROBLEM check, and the next collection reconnects by itself.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from exporter.collectors.base import Check, Collector, Observation, Verdict
from exporter.config import RedisTarget
from exporter.metrics import counter, gauge

log = logging.getLogger(__name__)

REDIS_UP = gauge("cachewarden_redis_up", "1 if the Redis server answered INFO, else 0.")
REDIS_KEYSPACE_HITS = counter("cachewarden_redis_keyspace_hits_total", "Key lookups that found the key.")
REDIS_KEYSPACE_MISSES = counter("cachewarden_redis_keyspace_misses_total", "Key lookups that missed.")
REDIS_CONNECTED_CLIENTS = gauge("cachewarden_redis_connected_clients", "Client connections open now.")
REDIS_MAX_CLIENTS = gauge("cachewarden_redis_max_clients", "The server's maxclients limit.")
REDIS_BLOCKED_CLIENTS = gauge("cachewarden_redis_blocked_clients", "Clients waiting in a blocking call.")
REDIS_REJECTED_CONNECTIONS = counter(
    "cachewarden_redis_rejected_connections_total", "Connections refused because maxclients was reached."
)
REDIS_EVICTED_KEYS = counter("cachewarden_redis_evicted_keys_total", "Keys evicted to stay under maxmemory.")
REDIS_USED_MEMORY = gauge("cachewarden_redis_used_memory_bytes", "Memory allocated by Redis.")
REDIS_MAX_MEMORY = gauge("cachewarden_redis_max_memory_bytes", "The maxmemory limit (0: no limit).")
REDIS_DB_KEYS = gauge("cachewarden_redis_db_keys", "Keys in one logical database.", ("db",))

# Share of maxclients above which the clients check reports a problem.
CLIENTS_WARN_RATIO = 0.8


class RedisCollector(Collector):
    kind = "redis"
    metrics = (
        REDIS_UP, REDIS_KEYSPACE_HITS, REDIS_KEYSPACE_MISSES, REDIS_CONNECTED_CLIENTS, REDIS_MAX_CLIENTS,
        REDIS_BLOCKED_CLIENTS, REDIS_REJECTED_CONNECTIONS, REDIS_EVICTED_KEYS, REDIS_USED_MEMORY,
        REDIS_MAX_MEMORY, REDIS_DB_KEYS,
    )

    def __init__(self, target: RedisTarget, *, interval: float, timeout: float) -> None:
        super().__init__(target.name, interval=interval, timeout=timeout)
        self._password = target.password()
        # Answer well inside the scheduler's timeout, and without retries: the next collection is the retry.
        io_timeout = max(0.1, timeout / 2)
        self._client = aioredis.Redis.from_url(
            target.url,
            password=self._password,
            socket_connect_timeout=io_timeout,
            socket_timeout=io_timeout,
            retry=Retry(NoBackoff(), 0),
            client_name="cachewarden",
            max_connections=1,
        )
        self._db = str(self._client.connection_pool.connection_kwargs.get("db", 0))
        self._was_down = False

    async def collect(self) -> Observation:
        samples = self.new_samples()
        try:
            info: dict[str, Any] = await self._client.info()
        except (RedisError, OSError) as exc:
            error = scrub(f"{type(exc).__name__}: {exc}", self._password)
            if not self._was_down:
                log.warning("redis/%s unreachable: %s", self.target, error)
            self._was_down = True
            samples.add(REDIS_UP, 0)
            check = Check("server reachable", Verdict.PROBLEM, f"Redis did not answer INFO: {error}")
            return Observation(samples, [check])
        if self._was_down:
            log.info("redis/%s reachable again", self.target)
        self._was_down = False

        samples.add(REDIS_UP, 1)
        samples.add(REDIS_KEYSPACE_HITS, info.get("keyspace_hits", 0))
        samples.add(REDIS_KEYSPACE_MISSES, info.get("keyspace_misses", 0))
        samples.add(REDIS_CONNECTED_CLIENTS, info.get("connected_clients", 0))
        samples.add(REDIS_MAX_CLIENTS, info.get("maxclients", 0))
        samples.add(REDIS_BLOCKED_CLIENTS, info.get("blocked_clients", 0))
        samples.add(REDIS_REJECTED_CONNECTIONS, info.get("rejected_connections", 0))
        samples.add(REDIS_EVICTED_KEYS, info.get("evicted_keys", 0))
        samples.add(REDIS_USED_MEMORY, info.get("used_memory", 0))
        samples.add(REDIS_MAX_MEMORY, info.get("maxmemory", 0))
        keys = db_key_counts(info)
        keys.setdefault(self._db, 0)  # the configured database exists at zero while it is empty
        for db, n in sorted(keys.items(), key=lambda kv: int(kv[0])):
            samples.add(REDIS_DB_KEYS, n, db=db)
        return Observation(samples, self._checks(info), {"db_keys": keys})

    def _checks(self, info: dict[str, Any]) -> list[Check]:
        checks = [Check("server reachable", Verdict.OK, f"Redis {info.get('redis_version', '?')} answers")]
        clients, maxclients = int(info.get("connected_clients", 0)), int(info.get("maxclients", 0))
        if maxclients:
            ratio = clients / maxclients
            verdict = Verdict.PROBLEM if ratio >= CLIENTS_WARN_RATIO else Verdict.OK
            checks.append(Check("clients", verdict, f"{clients} of {maxclients} clients ({ratio:.0%})"))
        evicted = int(info.get("evicted_keys", 0))
        if evicted:
            checks.append(Check("evictions", Verdict.NOTE,
                                f"{evicted} keys evicted since start: maxmemory is being reached"))
        return checks

    async def close(self) -> None:
        await self._client.aclose()


def scrub(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` masked: error messages go to logs and the status page."""
    return text.replace(secret, "***") if secret else text


def db_key_counts(info: dict[str, Any]) -> dict[str, int]:
    """Keys per logical database from INFO's keyspace section (`db3: {keys: 5, ...}`)."""
    out: dict[str, int] = {}
    for name, value in info.items():
        if name.startswith("db") and name[2:].isdigit() and isinstance(value, dict):
            out[name[2:]] = int(value.get("keys", 0))
    return out
