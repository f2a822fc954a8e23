"""Generated requests against /heal: never a 5xx, never a run unless authorised, firing, planned and exact.

Payloads start valid (an authorised, firing, planned alert for a configured target) and have at most
one field broken, so that both sides of every guard are reached; requests go out as raw bytes, so
headers that are not UTF-8 are sent too. The runs are real (views actions on a temporary app).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exporter.app import create_app
from exporter.config import Config
from exporter.heal.routes import HEAL_RUNNER
from tests.support.healing import TOKEN, alert, heal_config, make_app_dir, payload, token_file

# Plans whose steps are harmless here: nothing to remove or recompile on an empty temporary app.
PLANS = ["CachewardenViewsOrphaned", "CachewardenViewsStale", "CachewardenViewsUncompiled"]
text = st.text(max_size=30)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
junk = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8)
# One field at a time is broken; "none" leaves the payload valid.
MUTATIONS = {
    "none": st.none(),
    "version": st.sampled_from(["3", 4, None]) | junk,
    "alert_status": st.sampled_from(["resolved", "pending", ""]) | junk,
    "alertname": st.sampled_from(["Other", "", "../x", "cachewardenviewsstale"]) | text | junk,
    "target": st.sampled_from(["www", "shop/../shop", "../../etc", "", "SHOP", "shop\x00"]) | text | junk,
    "drop_target": st.none(),
    "startsAt": junk,
    "fingerprint": junk,
    "labels": junk,
    "alerts": junk,
    "extra_key": junk,
}
BAD_AUTH = [b"Bearer wrong", b"", b"Basic " + TOKEN.encode(), b"Bearer " + TOKEN.encode() + b"x",
            b"Bearer ", b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode()[:-1] + b"\xe9", b"\xff\xfe"]
GOOD_AUTH = b"Bearer " + TOKEN.encode()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    a = alert(draw(st.sampled_from(PLANS)), fingerprint=uuid.uuid4().hex, starts_at=uuid.uuid4().hex)
    body = payload(a)
    kind = draw(st.sampled_from(["none"] * 4 + sorted(MUTATIONS)))
    value = draw(MUTATIONS[kind])
    if kind == "version":
        body["version"] = value
    elif kind == "alert_status":
        a["status"] = value
    elif kind in ("alertname", "target"):
        a["labels"][kind] = value
    elif kind == "drop_target":
        del a["labels"]["target"]
    elif kind in ("startsAt", "fingerprint", "labels"):
        a[kind] = value
    elif kind == "alerts":
        body["alerts"] = value
    elif kind == "extra_key":
        a["extra"] = value
    return kind, body


def config_for(tmp: Path) -> Config:
    root = tmp / "shop"
    if not root.exists():
        make_app_dir(root)
    return heal_config(root, token_file(tmp))


async def exchange(config: Config, body: bytes, authorization: bytes | None, ctype: bytes,
                   query: str) -> tuple[int, list[Any]]:
    server = TestServer(create_app(config, run_collectors=False))
    await server.start_server()
    try:
        head = [f"POST /heal{query} HTTP/1.1".encode(), f"Host: 127.0.0.1:{server.port}".encode(),
                f"Content-Length: {len(body)}".encode(), b"Connection: close"]
        if ctype:
            head.append(b"Content-Type: " + ctype)
        if authorization is not None:
            head.append(b"Authorization: " + authorization)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
        writer.close()
        await writer.wait_closed()
        runner = server.app[HEAL_RUNNER]
        await runner.wait_idle()
        return int(status_line.split()[1]), runner.recent_runs()
    finally:
        await server.close()


def test_generated_requests_never_5xx_and_never_act_unless_valid(tmp_path: Path) -> None:
    started: list[str] = []

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=mutated(), raw=st.sampled_from([None, None, None]) | st.binary(max_size=64),
           authorization=st.sampled_from([GOOD_AUTH, GOOD_AUTH, *BAD_AUTH, None]),
           ctype=st.sampled_from([b"application/json", b"application/json",
                                  b"application/json; charset=utf-8", b"text/plain", b""]),
           query=st.sampled_from(["", "", "", "?action=views.remove_orphans&target=shop",
                                  "?action=x&target=shop", "?action=views.recompile&target=../../etc"]))
    def check(case: tuple[str, Any], raw: bytes | None, authorization: bytes | None, ctype: bytes,
              query: str) -> None:
        mutation, body = case
        data = raw if raw is not None else json.dumps(body).encode()
        status, runs = asyncio.run(exchange(config_for(tmp_path), data, authorization, ctype, query))

        assert status < 500
        if authorization != GOOD_AUTH:
            assert status in (401, 403)
            assert runs == []
            return
        if query.startswith("?action=views.remove_orphans"):
            assert [(r.steps, r.target) for r in runs] == [(["views.remove_orphans"], "shop")]
            return
        if query:
            assert runs == []
            return
        as_json = raw is None and ctype.startswith(b"application/json")
        first = body["alerts"][0] if isinstance(body["alerts"], list) and body["alerts"] else {}
        valid = as_json and (mutation in ("none", "extra_key") or (
            mutation in ("startsAt", "fingerprint") and isinstance(first[mutation], str)))
        if not valid:
            # A broken payload is refused as a whole, or its one broken alert is not acted on.
            assert runs == [], mutation
            return
        assert status == 200
        assert len(runs) <= 1
        if runs:
            assert (runs[0].plan, runs[0].target) == (body["alerts"][0]["labels"]["alertname"], "shop")
            assert not runs[0].dry_run
            started.append(runs[0].id)
        event(f"valid payload: {'started' if runs else 'not started'}")

    check()
    assert started, "no generated payload ever started a run: the generator does not reach the valid case"
