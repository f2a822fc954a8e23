"""PHP-FPM pool health from the pool's own status page, plus `pm.max_children` from its config file.

    cachewarden_fpm_up{target="www"} 1
    cachewarden_fpm_processes{target="www",state="active"} 1
    cachewarden_fpm_max_children{target="www"} 5
    cachewarden_fpm_max_children_reached_total{target="www"} 0

A pool that cannot answer is reported, not raised: `cachewarden_fpm_up` 0 with a PROBLEM check, and the
collection itself succeeds, so `cachewarden_collector_up{collector="fpm"}` keeps meaning "cachewarden
can measure this target" and the counters below stay exported. Two ways down are told apart:
- the socket accepts but the status page does not answer in time: every worker is busy (a pool cannot
  answer its own status page when saturated) or the pool is hung (a stopped master or workers: the
  kernel still queues connections on the listening socket), counted in
  cachewarden_fpm_status_timeouts_total;
- the socket refuses connections (FPM stopped, wrong address) or answers something else.
The status request shares the pool's one cachewarden slot with the OPcache agent; it waits for it at
most `timeout - connect_timeout - status_timeout`, and a wait that runs out also counts as a status
timeout, so an agent run holding the slot cannot hide a saturated pool for a whole collection.
Active processes include the worker answering the status request itself.

`pm.max_children` is read from the pool configuration by FPM's rules (exporter.php.pool_config). Where
it is `${NAME}`, FPM took the number from its environment at start. That environment cannot be read
from /proc/<master pid>/environ: FPM overwrites that area with its process title (measured: all
zero bytes). The workers hold the master's variables when the pool has `clear_env = no` or an
`env[X] = $NAME` line, and then the agent reads it there (getenv inside a worker), once per FPM
start. Otherwise the value is unknown: the gauge is left out, and the fpm.max_children check says why.

FPM measures its listen queue only on TCP sockets: on a unix socket the listen-queue gauges are always 0
(still exported, so dashboards and rules keep one shape), and saturation shows only as
cachewarden_fpm_status_timeouts_total; the fpm.listen_queue check says so.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from exporter.collectors.base import Check, Collector, Observation, Verdict
from exporter.config import PhpFpmTarget
from exporter.metrics import Samples, counter, gauge
from exporter.php import fastcgi
from exporter.php.agent import Agent, AgentError
from exporter.php.endpoint import EndpointBusy, FpmEndpoint
from exporter.php.pool_config import Directive, PoolConfigError, PoolSettings, fpm_integer, read_pool

FPM_UP = gauge("cachewarden_fpm_up", "1 if the pool answered its status page, else 0.")
FPM_STATUS_TIMEOUTS = counter(
    "cachewarden_fpm_status_timeouts_total",
    "Status requests accepted by the socket but not answered in time: the pool is saturated (every worker "
    "busy) or hung (master or workers stopped).",
)
FPM_PROCESSES = gauge(
    "cachewarden_fpm_processes", "Worker processes by state (active includes the status request).", ("state",)
)
FPM_TOTAL_PROCESSES = gauge("cachewarden_fpm_total_processes", "Worker processes, active or idle.")
FPM_MAX_ACTIVE = gauge(
    "cachewarden_fpm_max_active_processes", "Most workers active at once since FPM started."
)
FPM_MAX_CHILDREN = gauge("cachewarden_fpm_max_children", "pm.max_children from the pool configuration.")
FPM_MAX_CHILDREN_REACHED = counter(
    "cachewarden_fpm_max_children_reached_total", "Times the pool wanted a worker beyond pm.max_children."
)
_TCP_ONLY = " TCP listeners only: always 0 on a unix socket (see cachewarden_fpm_status_timeouts_total)."
FPM_LISTEN_QUEUE = gauge("cachewarden_fpm_listen_queue", "Connections waiting for a free worker." + _TCP_ONLY)
FPM_LISTEN_QUEUE_MAX = gauge(
    "cachewarden_fpm_listen_queue_max", "Most connections ever waiting since start." + _TCP_ONLY
)
FPM_LISTEN_QUEUE_LENGTH = gauge(
    "cachewarden_fpm_listen_queue_length", "Size of the socket's listen backlog." + _TCP_ONLY
)
FPM_SLOW_REQUESTS = counter(
    "cachewarden_fpm_slow_requests_total", "Requests that exceeded request_slowlog_timeout."
)
FPM_ACCEPTED = counter("cachewarden_fpm_accepted_connections_total", "Connections the pool accepted.")
FPM_START_TIME = gauge("cachewarden_fpm_start_time_seconds", "Unix time the FPM master started.")

STATES = ("active", "idle")

_FIELDS = (
    (FPM_TOTAL_PROCESSES, "total processes"),
    (FPM_MAX_ACTIVE, "max active processes"),
    (FPM_MAX_CHILDREN_REACHED, "max children reached"),
    (FPM_LISTEN_QUEUE, "listen queue"),
    (FPM_LISTEN_QUEUE_MAX, "max listen queue"),
    (FPM_LISTEN_QUEUE_LENGTH, "listen queue len"),
    (FPM_SLOW_REQUESTS, "slow requests"),
    (FPM_ACCEPTED, "accepted conn"),
    (FPM_START_TIME, "start time"),
)


def status_params(status_path: str, *, full: bool = False) -> dict[str, str]:
    query = "json&full" if full else "json"
    return {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": status_path,
        "SCRIPT_FILENAME": status_path,
        "REQUEST_URI": f"{status_path}?{query}",
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }


async def pool_identity(endpoint: FpmEndpoint, target: PhpFpmTarget) -> tuple[str | None, list[int]]:
    """The name of the pool answering at `endpoint` and its workers' pids, from its status page
    (`?json&full`); (None, []) when the page does not answer. Read there, not with fpm_get_status() in a
    worker, which segfaults that worker while a sibling is still starting (php-src GH-18595)."""
    try:
        resp = await endpoint.request(status_params(target.status_path, full=True),
                                      read_timeout=target.status_timeout, wait_timeout=target.status_timeout)
        status = json.loads(resp.body) if resp.status == 200 else None
    except (EndpointBusy, fastcgi.FastCGIError, OSError, ValueError):
        return None, []
    if not isinstance(status, dict):
        return None, []
    pool = status.get("pool") if isinstance(status.get("pool"), str) else None
    procs = status.get("processes")
    pids = [p["pid"] for p in procs if isinstance(p, dict) and isinstance(p.get("pid"), int)] \
        if isinstance(procs, list) else []
    return pool, pids


class FpmCollector(Collector):
    kind = "fpm"
    up = FPM_UP
    metrics = (
        FPM_UP, FPM_STATUS_TIMEOUTS, FPM_PROCESSES, FPM_TOTAL_PROCESSES, FPM_MAX_ACTIVE, FPM_MAX_CHILDREN,
        FPM_MAX_CHILDREN_REACHED, FPM_LISTEN_QUEUE, FPM_LISTEN_QUEUE_MAX, FPM_LISTEN_QUEUE_LENGTH,
        FPM_SLOW_REQUESTS, FPM_ACCEPTED, FPM_START_TIME,
    )

    def __init__(
        self, target: PhpFpmTarget, endpoint: FpmEndpoint, agent: Agent | None = None, *,
        interval: float, timeout: float,
    ) -> None:
        super().__init__(target.name, interval=interval, timeout=timeout)
        self.config = target
        self.endpoint = endpoint
        self.agent = agent  # reads `${NAME}` values from a worker's environment
        self.status_timeouts = 0
        self._last_reached: float | None = None
        # The workers' variables last read, by FPM start time: they change only when FPM restarts.
        self._environment: tuple[object, dict[str, str | None]] | None = None

    async def collect(self) -> Observation:
        s = self.new_samples()
        t = self.config
        wait = max(0.0, self.timeout - t.connect_timeout - t.status_timeout)
        try:
            resp = await self.endpoint.request(
                status_params(t.status_path), read_timeout=t.status_timeout, wait_timeout=wait
            )
        except EndpointBusy:
            self.status_timeouts += 1
            return self._down(s, f"cachewarden's OPcache agent run on this pool did not finish within "
                                 f"{wait:g}s, so the status page could not be asked: the pool may be "
                                 "saturated (every worker busy) or hung")
        except fastcgi.FastCGITimeout:
            self.status_timeouts += 1
            return self._down(s, f"the socket accepts connections but the status page did not answer within "
                                 f"{t.status_timeout:g}s: the pool is saturated (every worker busy) or hung "
                                 f"(a stopped master or workers), or {t.address} is not a FastCGI server")
        except fastcgi.FastCGIConnectError:
            return self._down(s, f"{self.config.address} refuses connections: PHP-FPM is not running there")
        except fastcgi.FastCGIError as exc:
            return self._down(s, f"the status request failed: {exc}")
        if resp.status != 200:
            return self._down(s, f"the status page answered HTTP {resp.status}: is pm.status_path = "
                                 f"{self.config.status_path} set in the pool?")
        try:
            status: dict[str, Any] = json.loads(resp.body)
        except ValueError:
            return self._down(s, "the status page did not answer JSON")
        return await self._up(s, status)

    def _down(self, s: Samples, why: str) -> Observation:
        s.add(FPM_UP, 0)
        s.add(FPM_STATUS_TIMEOUTS, self.status_timeouts)
        return Observation(s, [Check("fpm.up", Verdict.PROBLEM, why)])

    async def _up(self, s: Samples, status: dict[str, Any]) -> Observation:
        s.add(FPM_UP, 1)
        s.add(FPM_STATUS_TIMEOUTS, self.status_timeouts)
        # A field the status page does not carry is left out, never exported as 0.
        for state in STATES:
            if f"{state} processes" in status:
                s.add(FPM_PROCESSES, float(status[f"{state} processes"]), state=state)
        for spec, key in _FIELDS:
            if key in status:
                s.add(spec, float(status[key]))
        pool = str(status.get("pool", ""))
        checks = [Check("fpm.up", Verdict.OK, f"pool {pool} answers its status page")]
        checks.append(await self._max_children(s, pool, status.get("start time")))
        if "max children reached" in status:
            reached = float(status["max children reached"])
            if self._last_reached is not None and reached > self._last_reached:
                checks.append(Check("fpm.max_children_reached", Verdict.PROBLEM,
                                    f"the pool hit pm.max_children {reached - self._last_reached:g} time(s) "
                                    "since the last collection: requests waited for a worker"))
            else:
                checks.append(Check("fpm.max_children_reached", Verdict.OK,
                                    f"pm.max_children reached {reached:g} time(s) since FPM started"))
            self._last_reached = reached
        queue = int(status.get("listen queue", 0))  # absent: nothing known to wait, no problem claimed
        if self.config.address.startswith("unix:"):
            checks.append(Check("fpm.listen_queue", Verdict.NOTE,
                                "listen queue not measured: FPM counts it only on TCP sockets; on this unix "
                                "socket saturation shows as cachewarden_fpm_status_timeouts_total"))
        elif queue > 0:
            checks.append(
                Check("fpm.listen_queue", Verdict.PROBLEM, f"{queue} connection(s) wait for a worker")
            )
        return Observation(s, checks, {"pool": pool, "status": status})

    async def _max_children(self, s: Samples, pool: str, started: object) -> Check:
        path = self.config.pool_config
        if path is None:
            return Check("fpm.max_children", Verdict.NOTE, "pool_config is not set: pm.max_children unknown")
        try:
            settings = await asyncio.to_thread(
                read_pool, path, self.config.pool_name or pool, self.config.fpm_prefix
            )
        except PoolConfigError as exc:
            return Check("fpm.max_children", Verdict.PROBLEM, str(exc))
        directive = settings.max_children_directive
        if directive is None:
            why = (f"{path}: [{settings.name}] sets no pm.max_children (FPM does not start without one: "
                   "is pool_config the configuration this FPM runs?)")
            return Check("fpm.max_children", Verdict.PROBLEM, why)
        where = f"{directive.file}:{directive.line}"
        if not directive.value.understood:
            return Check("fpm.max_children", Verdict.NOTE,
                         f"pm.max_children = {directive.value.raw} ({where}) is in a form cachewarden does "
                         "not read (e.g. ${NAME:-default}, PHP 8.3+); cachewarden_fpm_max_children is "
                         "left out")
        origin = ""
        text = directive.value.literal
        if directive.value.variables:
            text, why = await self._expand(settings, directive, started)
            if text is None:
                return Check("fpm.max_children", Verdict.NOTE,
                             f"pm.max_children = {directive.value.raw} ({where}) comes from FPM's "
                             f"environment at start, unknown here: {why}; cachewarden_fpm_max_children "
                             "is left out")
            origin = f", from {directive.value.label()} in {where}"
        number = fpm_integer(text)
        if number is None or number < 1:
            return Check("fpm.max_children", Verdict.PROBLEM,
                         f"pm.max_children = {text!r} ({where}) is not a positive integer: FPM refuses it")
        s.add(FPM_MAX_CHILDREN, number)
        return Check("fpm.max_children", Verdict.OK, f"pm.max_children = {number}{origin}")

    async def _expand(
        self, settings: PoolSettings, directive: Directive, started: object
    ) -> tuple[str | None, str]:
        """The directive's `${NAME}` value as FPM expanded it, read from a worker; or None and why."""
        sources = {name: settings.env_source(name) for name in directive.value.variables}
        hidden = [name for name, source in sources.items() if source is None]
        if hidden:
            names = ", ".join(f"${name}" for name in hidden)
            return None, (f"FPM's workers do not see {names} (their environment is cleared: "
                          f"clear_env = yes); add `env[{hidden[0]}] = ${hidden[0]}` to [{settings.name}] "
                          "or set clear_env = no to let cachewarden read it")
        if self.agent is None:
            return None, "no agent to read the workers' environment"
        wanted = sorted({source for source in sources.values() if source is not None})
        cached = self._environment
        if cached is None or cached[0] != started or not set(wanted) <= cached[1].keys():
            try:
                reply = await self.agent.run("environment", {"names": wanted})
            except (AgentError, fastcgi.FastCGIError) as exc:
                return None, f"the agent could not read the workers' environment: {exc}"
            found = reply.result.get("variables") if isinstance(reply.result, dict) else None
            if not isinstance(found, dict):
                return None, "the agent's answer has no variables"
            variables = {k: v if isinstance(v, str) else None for k, v in found.items()}
            self._environment = cached = (started, variables)
        env: dict[str, str] = {}
        for name, source in sources.items():
            value = cached[1].get(source or name)
            if value is None:
                return None, f"${source} is not set in the workers' environment"
            env[name] = value
        return directive.value.expand(env), ""
