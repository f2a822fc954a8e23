"""The PHP-FPM pools cachewarden talks to: one endpoint per configured pool, built once and shared.

The FPM and OPcache collectors and the heal all reach a pool through the same `FpmEndpoint`, whose
lock keeps cachewarden as a whole to one worker of the pool at a time. The registry is built where the
app (or a command) is assembled and handed to the collectors and to the heal; nothing looks for a
pool's endpoint by searching the collectors.
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter.config import PhpFpmTarget
from exporter.php.agent import Agent
from exporter.php.endpoint import FpmEndpoint


class FpmPools:
    def __init__(self, pools: Iterable[PhpFpmTarget]) -> None:
        self._endpoints = {p.name: FpmEndpoint(p.address, connect_timeout=p.connect_timeout) for p in pools}

    def endpoint(self, pool: PhpFpmTarget) -> FpmEndpoint:
        """The shared endpoint of a configured pool (one is made for a pool built outside the config)."""
        if pool.name not in self._endpoints:
            self._endpoints[pool.name] = FpmEndpoint(pool.address, connect_timeout=pool.connect_timeout)
        return self._endpoints[pool.name]

    def agent(self, pool: PhpFpmTarget, timeout: float) -> Agent:
        return Agent(self.endpoint(pool), pool.agent_dir, timeout=timeout)
