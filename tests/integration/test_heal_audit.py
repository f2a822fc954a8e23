"""The audit stream on a real Redis keeps the runs however many requests are refused."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from exporter.app import create_app
from exporter.config import parse
from exporter.heal.audit import Audit
from exporter.heal.routes import HEAL_RUNNER
from tests.support.healing import AUTH, alert, an_hour_ago, make_app_dir, payload, token_file, write_compiled
from tests.support.redis_server import SHARED_REDIS_URL
from tests.unit.test_heal_http import metric

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
REFUSED_PER_KIND = 400
# Small, so that refusals written to the stream would evict the run's entries many times over.
MAXLEN = 100




async def test_refused_requests_never_push_runs_out_of_the_audit_stream(
        redis: Redis, tmp_path: Path, aiohttp_client: MakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    target = f"shop-{uuid.uuid4().hex[:8]}"
    stream = f"cachewarden:test:audit:{target}"  # this test's own stream: other runs share the Redis
    root = make_app_dir(tmp_path / "shop")
    write_compiled(root, str(root / "resources/views/gone.blade.php"), mtime=an_hour_ago())
    config = parse({"laravel": [{"name": target, "root": str(root)}],
                    "heal": {"token_file": str(token_file(tmp_path)), "redis_url": SHARED_REDIS_URL}})
    client = await aiohttp_client(create_app(config, run_collectors=False))
    runner = client.server.app[HEAL_RUNNER]  # type: ignore[index]
    runner.audit = Audit(runner.metrics, redis, stream=stream, maxlen=MAXLEN)
    try:
        body = json.dumps(payload(alert("CachewardenViewsOrphaned", target, fingerprint=uuid.uuid4().hex)))
        resp = await client.post("/heal", data=body, headers={"Content-Type": "application/json", **AUTH})
        assert (await resp.json())["decisions"][0]["decision"] == "started"
        await runner.wait_idle()

        refused = [
            ({}, 401),  # no token
            ({"Authorization": "Bearer wrong-token-wrong-token"}, 401),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
            ({**AUTH, "Content-Type": "application/json"}, 400),  # the token, but the body is not JSON
        ]
        for headers, status in refused:
            for start in range(0, REFUSED_PER_KIND, 100):
                answers = await asyncio.gather(*(
                    client.post("/heal", data=b"{not json", headers=headers)
                    for _ in range(start, start + 100)))
                assert {a.status for a in answers} == {status}

        records = [json.loads(fields[b"event"]) for _, fields in await redis.xrange(stream)]
        assert [r["event"] for r in records] == ["heal_request", "heal_started", "heal_finished"]
        assert records[0]["outcome"] == "accepted"
        assert records[2]["target"] == target
        assert records[2]["result"] == "verified"
        text = await (await client.get("/metrics")).text()
        assert metric(text, "cachewarden_heal_requests_total", outcome="unauthorized") == 3 * REFUSED_PER_KIND
        assert metric(text, "cachewarden_heal_requests_total", outcome="bad_request") == REFUSED_PER_KIND
        # One log line per outcome within the interval, each one line of JSON without a traceback.
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        refusal_lines = [r for r in lines if r["event"] == "heal_request" and r["outcome"] != "accepted"]
        assert sorted(r["outcome"] for r in refusal_lines) == ["bad_request", "unauthorized"]
    finally:
        await redis.delete(stream)
