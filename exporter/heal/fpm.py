"""Running heal scripts inside a PHP-FPM pool through the agent (same envelope, token and cleanup).

`exporter.php.agent.Agent` runs the fixed OPcache actions; a view compile needs a script of its own
(exporter/heal/php/compile_views.php), which the agent wraps, writes for one request and deletes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from exporter.collectors.base import Collector
from exporter.collectors.fpm import FpmCollector
from exporter.collectors.opcache import OpcacheCollector
from exporter.config import PhpFpmTarget
from exporter.php.agent import Agent
from exporter.php.endpoint import FpmEndpoint


def fpm_endpoints(collectors: Iterable[Collector]) -> dict[str, FpmEndpoint]:
    """The endpoint each PHP-FPM target's collectors share, by target name."""
    out: dict[str, FpmEndpoint] = {}
    for c in collectors:
        if isinstance(c, FpmCollector):
            out.setdefault(c.target, c.endpoint)
        elif isinstance(c, OpcacheCollector):
            out.setdefault(c.target, c.agent.endpoint)
    return out


class HealFpm:
    """One endpoint per pool, so the heal's own requests to a pool go one at a time.

    `shared` holds the collectors' endpoints: the heal borrows the same object (and so the same lock)
    the FPM and OPcache collectors use, so cachewarden as a whole never takes two workers of a pool.
    """

    def __init__(self, shared: dict[str, FpmEndpoint] | None = None) -> None:
        self._endpoints: dict[str, FpmEndpoint] = dict(shared or {})

    def endpoint(self, pool: PhpFpmTarget) -> FpmEndpoint:
        if pool.name not in self._endpoints:
            self._endpoints[pool.name] = FpmEndpoint(pool.address, connect_timeout=pool.connect_timeout)
        return self._endpoints[pool.name]

    def agent(self, pool: PhpFpmTarget, timeout: float) -> Agent:
        return Agent(self.endpoint(pool), pool.agent_dir, timeout=timeout)

    async def run_script(self, pool: PhpFpmTarget, script: str, args: dict[str, Any],
                         time_limit: float) -> Any:
        """The `result` of a heal script run inside `pool`; raises AgentError or FastCGIError."""
        return (await self.agent(pool, time_limit).run_source("heal", script, args)).result
