"""The FPM collector exports the status page's fields as the page reports them: a field it lacks is
absent, never 0 (a status page of another FPM version, or a proxy answering with a trimmed page)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from exporter.collectors.base import Verdict
from exporter.collectors.fpm import (
    FPM_LISTEN_QUEUE,
    FPM_MAX_CHILDREN_REACHED,
    FPM_PROCESSES,
    FPM_UP,
    FpmCollector,
)
from exporter.config import PhpFpmTarget


class FakeEndpoint:
    def __init__(self, status: dict[str, Any]) -> None:
        self.body = json.dumps(status).encode()

    async def request(self, params: dict[str, str], **_: float) -> SimpleNamespace:
        return SimpleNamespace(status=200, body=self.body)


async def collect(status: dict[str, Any]) -> Any:
    target = PhpFpmTarget(name="www", address="127.0.0.1:9000")
    collector = FpmCollector(target, FakeEndpoint(status), interval=10, timeout=5)  # type: ignore[arg-type]
    return await collector.collect()


async def test_a_full_status_page_exports_every_field() -> None:
    obs = await collect({"pool": "www", "active processes": 3, "idle processes": 2, "listen queue": 0,
                         "max children reached": 4})
    assert obs.samples.value(FPM_UP) == 1
    assert obs.samples.value(FPM_PROCESSES, state="active") == 3
    assert obs.samples.value(FPM_MAX_CHILDREN_REACHED) == 4
    assert obs.samples.value(FPM_LISTEN_QUEUE) == 0


async def test_fields_the_status_page_lacks_are_absent_and_checked_for_nothing() -> None:
    obs = await collect({"pool": "www"})
    assert obs.samples.value(FPM_UP) == 1
    assert obs.samples.value(FPM_PROCESSES, state="active") is None
    assert obs.samples.value(FPM_PROCESSES, state="idle") is None
    assert obs.samples.value(FPM_MAX_CHILDREN_REACHED) is None
    assert obs.samples.value(FPM_LISTEN_QUEUE) is None
    names = {c.name for c in obs.checks}
    assert "fpm.max_children_reached" not in names  # no "reached 0 time(s)" made up
    assert all(c.verdict is not Verdict.PROBLEM for c in obs.checks if c.name != "fpm.max_children")
