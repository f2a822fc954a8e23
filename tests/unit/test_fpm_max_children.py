"""pm.max_children from the pool configuration, `${NAME}` read from a worker's environment (a fake agent
here; tests/integration/test_php_env_config.py runs the real one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.collectors.base import Verdict
from exporter.collectors.fpm import FPM_MAX_CHILDREN, FpmCollector
from exporter.config import parse
from exporter.php.agent import Agent, AgentError, AgentReply
from exporter.php.endpoint import FpmEndpoint


class FakeAgent(Agent):
    def __init__(self, variables: dict[str, str | None] | Exception) -> None:
        self.variables = variables
        self.calls: list[dict[str, Any]] = []

    async def run(self, action: str, args: dict[str, Any] | None = None) -> AgentReply:
        self.calls.append({"action": action, **(args or {})})
        if isinstance(self.variables, Exception):
            raise self.variables
        return AgentReply({"variables": self.variables}, [])


def collector(tmp_path: Path, pool: str, agent: Agent | None) -> FpmCollector:
    conf = tmp_path / "www.conf"
    conf.write_text("[www]\n" + pool)
    config = parse({"php_fpm": [{"name": "www", "address": "unix:/nowhere.sock", "pool_config": str(conf)}]})
    return FpmCollector(config.php_fpm[0], FpmEndpoint("unix:/nowhere.sock"), agent, interval=10, timeout=5)


async def test_a_plain_number_needs_no_agent(tmp_path: Path) -> None:
    c = collector(tmp_path, "pm.max_children = 8\n", None)
    s = c.new_samples()
    check = await c._max_children(s, "www", 1000)
    assert (check.verdict, s.value(FPM_MAX_CHILDREN)) == (Verdict.OK, 8)


async def test_the_workers_environment_is_read_once_per_fpm_start(tmp_path: Path) -> None:
    agent = FakeAgent({"MAXC": "12"})
    c = collector(tmp_path, "clear_env = no\npm.max_children = ${MAXC}\n", agent)
    for started in (1000, 1000, 2000):
        s = c.new_samples()
        check = await c._max_children(s, "www", started)
        assert check.verdict is Verdict.OK
        assert s.value(FPM_MAX_CHILDREN) == 12
    assert agent.calls == [{"action": "environment", "names": ["MAXC"]}] * 2


async def test_env_line_names_the_worker_variable_to_read(tmp_path: Path) -> None:
    agent = FakeAgent({"WORKERS": "6"})
    c = collector(tmp_path, "env[WORKERS] = $MAXC\npm.max_children = ${MAXC}\n", agent)
    s = c.new_samples()
    await c._max_children(s, "www", 1)
    assert s.value(FPM_MAX_CHILDREN) == 6
    assert agent.calls == [{"action": "environment", "names": ["WORKERS"]}]


async def test_an_unreadable_value_is_absent_with_the_reason(tmp_path: Path) -> None:
    cases: list[tuple[str, FakeAgent, str]] = [
        ("pm.max_children = ${MAXC}\n", FakeAgent({"MAXC": "4"}), "clear_env = yes"),
        ("clear_env = no\npm.max_children = ${MAXC}\n", FakeAgent(AgentError("agent_dir missing")),
         "agent_dir missing"),
        ("clear_env = no\npm.max_children = ${MAXC}\n", FakeAgent({"MAXC": None}), "$MAXC is not set"),
        ("pm.max_children = ${MAXC:-5}\n", FakeAgent({}), "a form cachewarden does not read"),
    ]
    for pool, agent, reason in cases:
        c = collector(tmp_path, pool, agent)
        s = c.new_samples()
        check = await c._max_children(s, "www", 1)
        assert check.verdict is Verdict.NOTE
        assert reason in check.summary
        assert s.value(FPM_MAX_CHILDREN) is None


async def test_a_value_fpm_refuses_is_a_problem(tmp_path: Path) -> None:
    refused = ("pm.max_children = 0\n", "pm.max_children = lots\n",
               "clear_env = no\npm.max_children = ${M}\n")
    for pool in refused:
        c = collector(tmp_path, pool, FakeAgent({"M": "x"}))
        s = c.new_samples()
        check = await c._max_children(s, "www", 1)
        assert check.verdict is Verdict.PROBLEM
        assert "not a positive integer" in check.summary
        assert s.value(FPM_MAX_CHILDREN) is None
