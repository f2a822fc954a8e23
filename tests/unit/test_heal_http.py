"""/heal over HTTP with the real views collector on a temporary app: guards, codes, dedup, resolved alerts."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import create_app
from exporter.config import Config
from exporter.heal.routes import HEAL_RUNNER
from exporter.heal.runner import HealRunner
from exporter.heal.runs import Run
from tests.support.healing import (
    AUTH,
    alert,
    an_hour_ago,
    heal_config,
    make_app_dir,
    payload,
    token_file,
    write_compiled,
)
from tests.support.wait import async_wait_for

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Serve = Callable[[Config], Awaitable[Client]]


@pytest.fixture
def serve(aiohttp_client: MakeClient) -> Serve:
    async def make(config: Config) -> Client:
        return await aiohttp_client(create_app(config, run_collectors=False))
    return make


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    return make_app_dir(tmp_path / "shop")


@pytest.fixture
def config(tmp_path: Path, app_root: Path) -> Config:
    return heal_config(app_root, token_file(tmp_path))


def runner_of(client: Client) -> HealRunner:
    assert client.server.app is not None
    return client.server.app[HEAL_RUNNER]


def metric(text: str, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def orphan(app_root: Path) -> Path:
    return write_compiled(app_root, str(app_root / "resources/views/gone.blade.php"), mtime=an_hour_ago())


async def post(client: Client, body: Any, headers: dict[str, str] | None = None) -> Any:
    return await client.post("/heal", data=json.dumps(body),
                             headers={"Content-Type": "application/json", **(headers or AUTH)})


async def test_firing_alert_starts_a_run_that_removes_the_orphan_and_verifies(
        serve: Serve, config: Config, app_root: Path) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await post(client, payload(alert("CachewardenViewsOrphaned")))

    assert resp.status == 200
    decision = (await resp.json())["decisions"][0]
    assert decision["decision"] == "started"
    await runner_of(client).wait_idle()
    run = await (await client.get(f"/heal/runs/{decision['run_id']}", headers=AUTH)).json()
    assert run["result"] == "verified"
    assert run["verified"] is True
    assert not compiled.exists()
    text = await (await client.get("/metrics")).text()
    assert metric(text, "cachewarden_heal_runs_total", action="views.remove_orphans",
                  result="verified", target="shop") == 1
    assert metric(text, "cachewarden_heal_steps_total", action="views.remove_orphans",
                  result="verified", target="shop") == 1
    assert metric(text, "cachewarden_heal_requests_total", outcome="accepted") == 1
    assert metric(text, "cachewarden_heal_ineffective", plan="CachewardenViewsOrphaned", target="shop") == 0


async def test_duplicate_delivery_runs_nothing(serve: Serve, config: Config, app_root: Path) -> None:
    orphan(app_root)
    client = await serve(config)
    body = payload(alert("CachewardenViewsOrphaned"))

    first = await (await post(client, body)).json()
    await runner_of(client).wait_idle()
    second = await (await post(client, body)).json()

    assert first["decisions"][0]["decision"] == "started"
    assert second["decisions"][0]["decision"] == "duplicate"
    assert len(runner_of(client).recent_runs()) == 1


async def test_a_new_occurrence_of_the_same_alert_is_acted_on_again(
        serve: Serve, config: Config, app_root: Path) -> None:
    client = await serve(config)
    for starts_at in ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"):
        body = payload(alert("CachewardenViewsOrphaned", starts_at=starts_at))
        assert (await (await post(client, body)).json())["decisions"][0]["decision"] == "started"
        await runner_of(client).wait_idle()


async def test_resolved_alerts_never_act(serve: Serve, config: Config, app_root: Path) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    body = payload(alert("CachewardenViewsOrphaned", status="resolved"), status="resolved")
    resp = await post(client, body)

    assert resp.status == 200
    assert (await resp.json())["decisions"][0]["decision"] == "resolved"
    assert runner_of(client).recent_runs() == []
    assert compiled.exists()


async def test_mixed_payload_is_decided_per_alert(serve: Serve, config: Config, app_root: Path) -> None:
    client = await serve(config)
    body = payload(alert("CachewardenViewsOrphaned", status="resolved", fingerprint="a"),
                   alert("CachewardenViewsOrphaned", fingerprint="b"),
                   alert("SomethingElse", fingerprint="c"),
                   alert("CachewardenViewsOrphaned", target="../../etc", fingerprint="d"))

    decisions = [d["decision"] for d in (await (await post(client, body)).json())["decisions"]]

    assert decisions == ["resolved", "started", "no_plan", "unknown_target"]
    await runner_of(client).wait_idle()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"},
                                     {"Authorization": "Bearer"}])
async def test_missing_or_wrong_token_is_401_and_acts_on_nothing(
        serve: Serve, config: Config, app_root: Path, headers: dict[str, str]) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await client.post("/heal", json=payload(alert("CachewardenViewsOrphaned")), headers=headers)

    assert resp.status == 401
    assert (await resp.json())["outcome"] == "unauthorized"
    assert compiled.exists()
    assert (await client.get("/heal", headers=headers)).status == 401


async def test_no_token_configured_answers_webhooks_200_disabled_and_acts_on_nothing(
        serve: Serve, app_root: Path) -> None:
    compiled = orphan(app_root)
    client = await serve(heal_config(app_root, None))

    resp = await post(client, payload(alert("CachewardenViewsOrphaned")), headers={})

    assert resp.status == 200  # Alertmanager neither retries nor counts a failed notification
    body = await resp.json()
    assert body["outcome"] == "disabled"
    assert "no token is configured" in body["error"]
    assert compiled.exists()
    assert runner_of(client).recent_runs() == []


async def test_no_token_configured_refuses_manual_runs_with_403(serve: Serve, app_root: Path) -> None:
    compiled = orphan(app_root)
    client = await serve(heal_config(app_root, None))

    resp = await client.post("/heal?action=views.remove_orphans&target=shop")

    assert resp.status == 403
    assert (await resp.json())["outcome"] == "disabled"
    assert compiled.exists()


async def test_heal_enabled_false_answers_2xx_and_acts_on_nothing(
        serve: Serve, tmp_path: Path, app_root: Path) -> None:
    compiled = orphan(app_root)
    client = await serve(heal_config(app_root, token_file(tmp_path), enabled=False))

    resp = await post(client, payload(alert("CachewardenViewsOrphaned")))

    assert resp.status == 200
    assert (await resp.json())["decisions"][0]["decision"] == "disabled"
    assert compiled.exists()


async def test_oversize_body_is_413(serve: Serve, tmp_path: Path, app_root: Path) -> None:
    client = await serve(heal_config(app_root, token_file(tmp_path), max_body_bytes=1024))
    body = payload(alert("CachewardenViewsOrphaned", note="x" * 900), alert("X", note="y" * 900))

    resp = await post(client, body)

    assert resp.status == 413


async def test_oversize_chunked_body_is_413(serve: Serve, tmp_path: Path, app_root: Path) -> None:
    client = await serve(heal_config(app_root, token_file(tmp_path), max_body_bytes=1024))

    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 512

    resp = await client.post("/heal", data=chunks(), headers={"Content-Type": "application/json", **AUTH})

    assert resp.status == 413


async def test_wrong_content_type_is_415(serve: Serve, config: Config) -> None:
    client = await serve(config)

    headers = {"Content-Type": "text/plain", **AUTH}
    resp = await client.post("/heal", data=json.dumps(payload()), headers=headers)

    assert resp.status == 415


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b'"x"', b'{"version": "4"}', b'{"version": "3", "status": "firing", "alerts": []}',
    json.dumps(payload(alert("X", status="pending"))).encode(), b"[" * 100_000,
    json.dumps({"version": "4", "status": "firing", "alerts": [{"labels": {"a": 1}, "status": "firing",
                                                                  "startsAt": "t"}]}).encode(),
])
async def test_malformed_payloads_are_4xx(serve: Serve, config: Config, body: bytes) -> None:
    client = await serve(config)

    resp = await client.post("/heal", data=body, headers={"Content-Type": "application/json", **AUTH})

    assert 400 <= resp.status < 500
    assert runner_of(client).recent_runs() == []


async def test_unknown_keys_are_accepted(serve: Serve, config: Config) -> None:
    client = await serve(config)
    body = {**payload(alert("CachewardenViewsOrphaned")), "notification_reason": "x", "routeLabels": {}}

    resp = await post(client, body)

    assert resp.status == 200
    await runner_of(client).wait_idle()


async def test_address_outside_allow_cidrs_is_403(serve: Serve, tmp_path: Path, app_root: Path) -> None:
    client = await serve(heal_config(app_root, token_file(tmp_path), allow_cidrs=["10.0.0.0/8"]))

    resp = await post(client, payload(alert("CachewardenViewsOrphaned")))

    assert resp.status == 403
    assert (await resp.json())["outcome"] == "forbidden"


async def test_address_inside_allow_cidrs_passes(serve: Serve, tmp_path: Path, app_root: Path) -> None:
    client = await serve(heal_config(app_root, token_file(tmp_path), allow_cidrs=["127.0.0.0/8", "::1/128"]))

    resp = await post(client, payload(alert("CachewardenViewsOrphaned")))

    assert resp.status == 200
    await runner_of(client).wait_idle()


async def test_manual_dry_run_lists_what_it_would_delete_and_deletes_nothing(
        serve: Serve, config: Config, app_root: Path) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await client.post("/heal?action=views.remove_orphans&target=shop&dry_run=1", headers=AUTH)

    assert resp.status == 200
    run = (await resp.json())["run"]
    assert run["result"] == "dry_run"
    assert run["step_results"][0]["done"] == [f"would delete {compiled}"]
    assert compiled.exists()


async def test_manual_run_answers_with_its_verified_result(
        serve: Serve, config: Config, app_root: Path) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await client.post("/heal?action=views.remove_orphans&target=shop", headers=AUTH)

    run = (await resp.json())["run"]
    assert run["result"] == "verified"
    assert not compiled.exists()
    listing = await (await client.get("/heal", headers=AUTH)).json()
    assert listing["runs"][0]["id"] == run["id"]
    assert "CachewardenViewsStale" in listing["plans"]
    assert "views.recompile" in listing["actions"]


async def test_a_failed_manual_run_answers_422_so_curl_fail_fails(
        serve: Serve, config: Config, app_root: Path) -> None:
    (app_root / "resources/views/new.blade.php").write_text("hi")  # and no PHP to compile it with
    client = await serve(config)

    resp = await client.post("/heal?action=views.recompile&target=shop", headers=AUTH)
    dry = await client.post("/heal?action=views.recompile&target=shop&dry_run=1", headers=AUTH)

    assert resp.status == 422
    body = await resp.json()
    assert (body["status"], body["result"], body["run"]["result"]) == ("finished", "failed", "failed")
    assert "no PHP to compile views" in body["run"]["step_results"][0]["error"]
    assert dry.status == 422  # the real run would fail the same way
    assert (await dry.json())["result"] == "failed"


@pytest.mark.parametrize(("result", "status"), [
    ("verified", 200), ("already_healthy", 200), ("dry_run", 200), ("unverified", 422), ("failed", 422),
    ("needs_restart", 422), ("not_clearable", 422)])
async def test_a_manual_run_answers_with_the_status_of_its_result(
        serve: Serve, config: Config, monkeypatch: pytest.MonkeyPatch, result: str, status: int) -> None:
    client = await serve(config)

    async def finished(action: str, target: str, dry_run: bool, requested_by: str,
                       args: dict[str, str]) -> Run:
        run = Run(target, [action], dry_run, requested_by)
        run.state, run.result = "finished", result
        return run

    monkeypatch.setattr(runner_of(client), "run_action", finished)
    resp = await client.post("/heal?action=views.recompile&target=shop", headers=AUTH)

    assert (resp.status, (await resp.json())["result"]) == (status, result)


@pytest.mark.parametrize("query", ["action=rm&target=shop", "action=views.recompile&target=../shop",
                                   "action=views.recompile&target=", "action=opcache.reset&target=shop"])
async def test_manual_run_with_unknown_action_or_target_is_400(
        serve: Serve, config: Config, query: str) -> None:
    client = await serve(config)

    resp = await client.post(f"/heal?{query}", headers=AUTH)

    assert resp.status == 400


async def test_manual_run_on_a_cooling_down_action_is_409(
        serve: Serve, config: Config, app_root: Path) -> None:
    orphan(app_root)
    client = await serve(config)
    first = await client.post("/heal?action=views.remove_orphans&target=shop", headers=AUTH)
    assert (await first.json())["run"]["result"] == "verified"
    orphan(app_root)

    second = await client.post("/heal?action=views.remove_orphans&target=shop", headers=AUTH)

    assert second.status == 409
    assert (await second.json())["run"]["result"] == "cooldown"


async def test_run_ids_that_do_not_exist_are_404(serve: Serve, config: Config) -> None:
    client = await serve(config)
    for run_id in ("0123456789abcdef", "..%2f..%2fetc"):
        assert (await client.get(f"/heal/runs/{run_id}", headers=AUTH)).status == 404


async def test_global_dry_run_makes_every_alert_run_a_dry_run(
        serve: Serve, tmp_path: Path, app_root: Path) -> None:
    compiled = orphan(app_root)
    client = await serve(heal_config(app_root, token_file(tmp_path), dry_run=True))

    body = await (await post(client, payload(alert("CachewardenViewsOrphaned")))).json()
    await runner_of(client).wait_idle()

    run = runner_of(client).run(body["decisions"][0]["run_id"])
    assert run is not None
    assert run.result == "dry_run"
    assert compiled.exists()


async def test_the_ineffective_gauge_follows_the_failures_in_the_store(
        aiohttp_client: MakeClient, config: Config) -> None:
    app = create_app(config, run_collectors=False)
    runner = app[HEAL_RUNNER]
    runner.ineffective_refresh = 0.02
    client = await aiohttp_client(app)
    # Failures another sidecar sharing the store recorded, then cleared by its verified run.
    key = runner._events_key("CachewardenViewsOrphaned", "shop")
    for _ in range(config.heal.ineffective_runs):
        await runner.store.add_event(key, time.time(), config.heal.ineffective_window)

    async def gauge_is(value: float) -> bool:
        text = await (await client.get("/metrics")).text()
        return metric(text, "cachewarden_heal_ineffective", plan="CachewardenViewsOrphaned",
                      target="shop") == value

    await async_wait_for(lambda: gauge_is(1), timeout=5, message="the plan counted ineffective")
    await runner.store.clear_events(key)
    await async_wait_for(lambda: gauge_is(0), timeout=5, message="the plan acting again")


@pytest.mark.parametrize("dry", ["dry-run=1", "dry_run=1", "dry_run=TRUE", "dry_run=yes", "dry_run=On"])
async def test_every_accepted_spelling_of_a_dry_run_deletes_nothing(
        serve: Serve, config: Config, app_root: Path, dry: str) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await client.post(f"/heal?action=views.remove_orphans&target=shop&{dry}", headers=AUTH)

    assert resp.status == 200
    assert (await resp.json())["result"] == "dry_run"
    assert compiled.exists()


@pytest.mark.parametrize(("query", "named"), [
    ("dry_run", "'dry_run' has the value ''"),
    ("dry_run=", "'dry_run' has the value ''"),
    ("dry_run=maybe", "'dry_run' has the value 'maybe'"),
    ("dry-run=2", "'dry_run' has the value '2'"),
    ("DRY_RUN=1", "unknown query parameter 'DRY_RUN'"),
    ("dryrun=1", "unknown query parameter 'dryrun'"),
    ("dry_run=1&dry-run=1", "'dry_run' is given more than once"),
    ("dry_run=1&dry_run=0", "'dry_run' is given more than once"),
    ("action=views.recompile", "'action' is given more than once"),
    ("target=other", "'target' is given more than once"),
    ("cache=routes", "'cache' is not taken by the action 'views.remove_orphans'"),
    ("cache=", "'cache' is not taken by the action 'views.remove_orphans'"),
])
async def test_a_manual_run_with_a_query_it_cannot_read_exactly_is_400_and_runs_nothing(
        serve: Serve, config: Config, app_root: Path, query: str, named: str) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await client.post(f"/heal?action=views.remove_orphans&target=shop&{query}", headers=AUTH)

    assert resp.status == 400
    assert named in (await resp.json())["error"]
    assert compiled.exists()
    assert runner_of(client).recent_runs() == []


async def test_an_explicit_real_run_spelled_off_runs(serve: Serve, config: Config, app_root: Path) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await client.post("/heal?action=views.remove_orphans&target=shop&dry_run=off", headers=AUTH)

    assert (resp.status, (await resp.json())["result"]) == (200, "verified")
    assert not compiled.exists()


@pytest.mark.parametrize("query", ["dry_run=1", "dry-run=1"])
async def test_a_webhook_delivery_with_a_query_is_400_and_acts_on_nothing(
        serve: Serve, config: Config, app_root: Path, query: str) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await client.post(f"/heal?{query}", data=json.dumps(payload(alert("CachewardenViewsOrphaned"))),
                             headers={"Content-Type": "application/json", **AUTH})

    assert resp.status == 400
    assert "unknown query parameter" in (await resp.json())["error"]
    assert compiled.exists()
    assert runner_of(client).recent_runs() == []


async def test_a_webhook_delivery_to_a_target_heal_url_is_400_and_acts_on_nothing(
        serve: Serve, config: Config, app_root: Path) -> None:
    # ?target=T alone heals everything T needs: a receiver URL ending in it must not do that per alert.
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await client.post("/heal?target=shop", data=json.dumps(payload(alert("CachewardenViewsOrphaned"))),
                             headers={"Content-Type": "application/json", **AUTH})

    assert resp.status == 400
    assert "takes no body" in (await resp.json())["error"]
    assert compiled.exists()
    assert runner_of(client).recent_runs() == []


@pytest.mark.parametrize("body", [
    b'{"version": "4", "status": "firing", "status": "resolved", "alerts": []}',
    json.dumps(payload(alert("CachewardenViewsOrphaned"))).replace(
        '"target": "shop"', '"target": "shop", "target": "other"').encode(),
])
async def test_a_payload_repeating_a_key_is_400_and_acts_on_nothing(
        serve: Serve, config: Config, app_root: Path, body: bytes) -> None:
    compiled = orphan(app_root)
    client = await serve(config)

    resp = await client.post("/heal", data=body, headers={"Content-Type": "application/json", **AUTH})

    assert resp.status == 400
    assert "repeats the key" in (await resp.json())["error"]
    assert compiled.exists()
    assert runner_of(client).recent_runs() == []


@pytest.mark.parametrize("path", ["/heal?runs=all", "/heal?x", "/heal/runs/0123456789abcdef?verbose=1"])
async def test_a_listing_with_a_query_is_400(serve: Serve, config: Config, path: str) -> None:
    client = await serve(config)

    resp = await client.get(path, headers=AUTH)

    assert resp.status == 400
    assert "unknown query parameter" in (await resp.json())["error"]


@pytest.mark.parametrize(("query", "named"), [
    ("cache=route", "'cache' has the value 'route': give one of config, routes, events, packages, all"),
    ("cache=", "'cache' has the value ''"),
    ("cache=ROUTES", "'cache' has the value 'ROUTES'"),
    ("cache=routes&cache=config", "'cache' is given more than once"),
    ("Cache=routes", "unknown query parameter 'Cache'"),
])
async def test_a_cache_rebuild_with_a_cache_it_does_not_know_is_400_and_runs_nothing(
        serve: Serve, config: Config, query: str, named: str) -> None:
    client = await serve(config)

    resp = await client.post(f"/heal?action=laravel.cache_rebuild&target=shop&{query}", headers=AUTH)

    assert resp.status == 400
    assert named in (await resp.json())["error"]
    assert runner_of(client).recent_runs() == []


@pytest.mark.parametrize(("query", "args"), [("", {}), ("&cache=routes", {"cache": "routes"}),
                                             ("&cache=all", {"cache": "all"})])
async def test_the_cache_argument_reaches_the_run_as_given(
        serve: Serve, config: Config, monkeypatch: pytest.MonkeyPatch, query: str,
        args: dict[str, str]) -> None:
    client = await serve(config)
    given: list[dict[str, str]] = []

    async def finished(action: str, target: str, dry_run: bool, requested_by: str,
                       args: dict[str, str]) -> Run:
        given.append(args)
        run = Run(target, [action], dry_run, requested_by, args=args)
        run.state, run.result = "finished", "dry_run"
        return run

    monkeypatch.setattr(runner_of(client), "run_action", finished)
    resp = await client.post(f"/heal?action=laravel.cache_rebuild&target=shop{query}", headers=AUTH)

    assert resp.status == 200
    assert given == [args]
    assert (await resp.json())["run"]["args"] == args


async def test_the_listing_names_each_actions_parameters(serve: Serve, config: Config) -> None:
    client = await serve(config)

    actions = (await (await client.get("/heal", headers=AUTH)).json())["actions"]

    assert actions["laravel.cache_rebuild"]["parameters"] == {
        "cache": ["config", "routes", "events", "packages", "all"]}
    assert actions["views.recompile"]["parameters"] == {}
