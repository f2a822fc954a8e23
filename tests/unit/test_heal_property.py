"""Generated requests against /heal: never a 5xx, never a run unless authorised, firing, planned and exact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.app import create_app
from exporter.config import Config
from exporter.heal.plans import DEFAULT_PLANS
from exporter.heal.routes import HEAL_RUNNER
from tests.support.healing import TOKEN, heal_config, make_app_dir, token_file

ALERTNAMES = [*DEFAULT_PLANS, "Other", "", "../x"]
TARGETS = ["shop", "www", "shop/../shop", "../../etc", "", "SHOP", "shop\x00"]
text = st.text(max_size=30)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
junk = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8)
labels = st.fixed_dictionaries({"alertname": st.sampled_from(ALERTNAMES) | text},
                               optional={"target": st.sampled_from(TARGETS) | text | junk}) | junk
alert = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved", "pending"]) | junk, "labels": labels,
     "startsAt": st.sampled_from(["2026-01-01T00:00:00Z"]) | text | junk},
    optional={"fingerprint": text | junk, "annotations": junk, "endsAt": text, "extra": junk})
body = st.fixed_dictionaries(
    {"version": st.sampled_from(["4", "3", 4]) | junk,
     "status": st.sampled_from(["firing", "resolved"]) | junk,
     "alerts": st.lists(alert, max_size=4) | junk},
    optional={"receiver": text, "groupKey": text, "notification_reason": junk}) | junk
auth = st.sampled_from([f"Bearer {TOKEN}", "Bearer wrong", "", f"Basic {TOKEN}", f"Bearer {TOKEN}x",
                        "Bearer "])
content_type = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""])


def config_for(tmp: Path) -> Config:
    root = tmp / "shop"
    if not root.exists():
        make_app_dir(root)
    return heal_config(root, token_file(tmp), dry_run=True)


async def exchange(config: Config, data: Any, authorization: str, ctype: str,
                   query: str) -> tuple[int, list[Any]]:
    client = TestClient(TestServer(create_app(config, run_collectors=False)))
    await client.start_server()
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        if authorization:
            headers["Authorization"] = authorization
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        resp = await client.post(f"/heal{query}", data=raw, headers=headers)
        runner = client.server.app[HEAL_RUNNER]  # type: ignore[index]
        await runner.wait_idle()
        return resp.status, runner.recent_runs()
    finally:
        await client.close()


def valid_firing(data: Any) -> list[tuple[str, str]]:
    """(alertname, target) of every alert that may legitimately start a run."""
    if not isinstance(data, dict) or data.get("version") != "4" or not isinstance(data.get("alerts"), list):
        return []
    out = []
    for a in data["alerts"]:
        if isinstance(a, dict) and a.get("status") == "firing" and isinstance(a.get("labels"), dict):
            name, target = a["labels"].get("alertname"), a["labels"].get("target")
            if name in DEFAULT_PLANS and not name.startswith("CachewardenOpcache") \
                    and name != "CachewardenCodeRevisionDrift" and target == "shop":
                out.append((name, target))
    return out


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=body | st.binary(max_size=64), authorization=auth, ctype=content_type,
       query=st.sampled_from(["", "", "?action=views.remove_orphans&target=shop", "?action=x&target=shop",
                              "?action=views.recompile&target=../../etc", "?action=&target="]))
def test_generated_requests_never_5xx_and_never_act_unless_valid(
        tmp_path: Path, data: Any, authorization: str, ctype: str, query: str) -> None:
    status, runs = asyncio.run(exchange(config_for(tmp_path), data, authorization, ctype, query))

    assert status < 500
    authorised = authorization == f"Bearer {TOKEN}"
    if not authorised:
        assert status in (401, 403)
        assert runs == []
        return
    if query.startswith("?action=views.remove_orphans"):
        assert [(r.steps, r.target) for r in runs] == [(["views.remove_orphans"], "shop")]
        return
    if query:
        assert runs == []
        return
    as_json = not isinstance(data, bytes) and ctype.startswith("application/json")
    allowed = valid_firing(data) if as_json else []
    assert {(r.plan, r.target) for r in runs} <= set(allowed)
    assert all(r.dry_run for r in runs)
