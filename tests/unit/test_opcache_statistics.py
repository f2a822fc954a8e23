"""OPcache statistics are exported as OPcache reports them: a field its status lacks stays absent."""

from __future__ import annotations

from typing import Any

from exporter.collectors.opcache import OPCACHE_HITS, OPCACHE_RESTARTS, OpcacheCollector
from exporter.config import parse
from exporter.php.agent import Agent, AgentReply


class NoAgent(Agent):
    def __init__(self) -> None:
        pass

    async def run(self, action: str, args: dict[str, Any] | None = None) -> AgentReply:
        raise AssertionError("not called")


def collector() -> OpcacheCollector:
    config = parse({"php_fpm": [{"name": "www", "address": "unix:/nowhere.sock"}]})
    return OpcacheCollector(config.php_fpm[0], NoAgent(), interval=10, timeout=5)


def test_restart_counts_absent_from_the_status_are_not_exported_as_zero() -> None:
    c = collector()
    s = c.new_samples()
    c._statistics(s, {"opcache_statistics": {"hits": 7, "oom_restarts": 2}}, [])
    assert s.value(OPCACHE_HITS) == 7
    assert s.value(OPCACHE_RESTARTS, cause="oom") == 2
    assert s.value(OPCACHE_RESTARTS, cause="hash") is None
    assert s.value(OPCACHE_RESTARTS, cause="manual") is None
