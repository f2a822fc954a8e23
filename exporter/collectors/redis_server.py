"""How a Redis server is measured: one `INFO` per collection, never KEYS or SCAN.

    cachewarden_redis_up{target="cache"} 1
    cachewarden_redis_keyspace_hits_total{target="cache"} 1042
    cachewarden_redis_db_keys{target="cache",db="0"} 17

An unreachable server is a finding about the target, not a failure of the collector: it yields
`cachewarden_redis_up 0` and a PROBLEM check, and the next collection reconnects by itself.

The connection does only what INFO needs, so that Redis 5.0 (no HELLO) and a least-privilege ACL user
(`+info +ping`) are measured like any other: RESP2 (redis-py 8 opens with HELLO otherwise), no
CLIENT SETNAME or CLIENT SETINFO, no SELECT (INFO's keyspace section covers every database). A field
the server does not report is not exported: `maxclients` is in INFO only since Redis 6.2, and
`maxmemory 0` means "no limit", which no number of bytes can stand for.
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
from exporter.metrics import MetricSpec, counter, gauge
from exporter.redis_options import minimal_connection

log = logging.getLogger(__name__)

REDIS_UP = gauge("cachewarden_redis_up", "1 if the Redis server answered INFO, else 0.")
REDIS_KEYSPACE_HITS = counter("cachewarden_redis_keyspace_hits_total", "Key lookups that found the key.")
REDIS_KEYSPACE_MISSES = counter("cachewarden_redis_keyspace_misses_total", "Key lookups that missed.")
REDIS_CONNECTED_CLIENTS = gauge("cachewarden_redis_connected_clients", "Client connections open now.")
REDIS_MAX_CLIENTS = gauge(
    "cachewarden_redis_max_clients", "The server's maxclients limit (absent before Redis 6.2: not in INFO)."
)
REDIS_BLOCKED_CLIENTS = gauge("cachewarden_redis_blocked_clients", "Clients waiting in a blocking call.")
REDIS_REJECTED_CONNECTIONS = counter(
    "cachewarden_redis_rejected_connections_total", "Connections refused because maxclients was reached."
)
REDIS_EVICTED_KEYS = counter("cachewarden_redis_evicted_keys_total", "Keys evicted to stay under maxmemory.")
REDIS_USED_MEMORY = gauge("cachewarden_redis_used_memory_bytes", "Memory allocated by Redis.")
REDIS_MAX_MEMORY = gauge(
    "cachewarden_redis_max_memory_bytes", "The maxmemory limit; absent when none is set (maxmemory 0)."
)
REDIS_DB_KEYS = gauge("cachewarden_redis_db_keys", "Keys in one logical database.", ("db",))

# Share of maxclients above which the clients check reports a problem.
CLIENTS_WARN_RATIO = 0.8


class RedisCollector(Collector):
    kind = "redis"
    up = REDIS_UP
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
            max_connections=1,
            **minimal_connection(),
        )
        kwargs = self._client.connection_pool.connection_kwargs
        self._db = str(kwargs.get("db", 0))
        kwargs["db"] = 0  # no SELECT on connect: INFO needs none, and a +info ACL user may not SELECT
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
        for spec, value in readings(info):
            samples.add(spec, value)
        keys = db_key_counts(info)
        keys.setdefault(self._db, 0)  # INFO lists only databases holding keys: the configured one is empty
        for db, n in sorted(keys.items(), key=lambda kv: int(kv[0])):
            samples.add(REDIS_DB_KEYS, n, db=db)
        return Observation(samples, checks(info), {"db_keys": keys})

    async def close(self) -> None:
        await self._client.aclose()


# INFO field -> metric, for the fields exported as the server reports them.
_FIELDS = (
    ("keyspace_hits", REDIS_KEYSPACE_HITS),
    ("keyspace_misses", REDIS_KEYSPACE_MISSES),
    ("connected_clients", REDIS_CONNECTED_CLIENTS),
    ("maxclients", REDIS_MAX_CLIENTS),
    ("blocked_clients", REDIS_BLOCKED_CLIENTS),
    ("rejected_connections", REDIS_REJECTED_CONNECTIONS),
    ("evicted_keys", REDIS_EVICTED_KEYS),
    ("used_memory", REDIS_USED_MEMORY),
)




def readings(info: dict[str, Any]) -> list[tuple[MetricSpec, float]]:
    """The metrics one INFO answer (as redis-py parses it) supports; a field it lacks is left out."""
    out = [(spec, value) for field, spec in _FIELDS if (value := _number(info, field)) is not None]
    if maxmemory := _number(info, "maxmemory"):  # 0 means unlimited
        out.append((REDIS_MAX_MEMORY, maxmemory))
    return out


def _number(info: dict[str, Any], field: str) -> float | None:
    """A numeric INFO field, or None when the server does not report it (or not as a number)."""
    value = info.get(field)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(info: dict[str, Any], field: str) -> int | None:
    value = _number(info, field)
    return None if value is None else int(value)


def checks(info: dict[str, Any]) -> list[Check]:
    """The health report of one INFO answer."""
    version = info.get("valkey_version") or info.get("redis_version", "?")
    server = "Valkey" if "valkey_version" in info or info.get("server_name") == "valkey" else "Redis"
    out = [Check("server reachable", Verdict.OK, f"{server} {version} answers")]
    clients, maxclients = _count(info, "connected_clients"), _count(info, "maxclients")
    if clients is not None and maxclients:
        ratio = clients / maxclients
        verdict = Verdict.PROBLEM if ratio >= CLIENTS_WARN_RATIO else Verdict.OK
        out.append(Check("clients", verdict, f"{clients} of {maxclients} clients ({ratio:.0%})"))
    elif clients is not None:
        out.append(Check("clients", Verdict.NOTE, (
            f"{clients} clients; {server} {version} does not report maxclients in INFO (Redis does since "
            "6.2), so the share of the limit is not measured")))
    if evicted := _count(info, "evicted_keys"):
        out.append(Check("evictions", Verdict.NOTE,
                         f"{evicted} keys evicted since start: maxmemory is being reached"))
    return out


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
