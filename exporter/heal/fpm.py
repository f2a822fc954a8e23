"""Running heal scripts inside a PHP-FPM pool through the agent (same envelope, token and cleanup).

`exporter.php.agent.Agent` runs the fixed OPcache actions; a view compile needs a script of its own
(exporter/heal/php/compile_views.php), which the agent wraps, writes for one request and deletes.
The endpoints come from the registry the collectors use (`exporter.php.pools.FpmPools`), handed in
where the heal is assembled, so the heal's requests to a pool wait for the collectors' and the other
way round: cachewarden as a whole never takes two workers of a pool.
"""

from __future__ import annotations

from typing import Any

from exporter.config import PhpFpmTarget
from exporter.php.agent import Agent
from exporter.php.pools import FpmPools


class HealFpm:
    def __init__(self, pools: FpmPools) -> None:
        self.pools = pools

    def agent(self, pool: PhpFpmTarget, timeout: float) -> Agent:
        return self.pools.agent(pool, timeout)

    async def run_script(self, pool: PhpFpmTarget, script: str, args: dict[str, Any],
                         time_limit: float) -> Any:
        """The `result` of a heal script run inside `pool`; raises AgentError or FastCGIError."""
        return (await self.agent(pool, time_limit).run_source("heal", script, args)).result
