"""The HTTP surface through aiohttp's test client: /metrics (text and OpenMetrics), /healthz, /."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.app import SCHEDULER, create_app
from exporter.collectors.base import ITEM_CAP, Check, Collector, Verdict
from exporter.config import Config
from exporter.scheduler import Scheduler
from tests.support.fakes import FakeCollector
from tests.support.wait import async_wait_for

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]
Serve = Callable[..., Awaitable[Client]]


@pytest.fixture
def serve(aiohttp_client: MakeClient) -> Serve:
    """A fresh app per call around the given collectors; collection is driven by the test."""
    async def make(*collectors: Collector, run_collectors: bool = False) -> Client:
        app = create_app(Config(), collectors=list(collectors), run_collectors=run_collectors)
        return await aiohttp_client(app)
    return make


def scheduler_of(client: Client) -> Scheduler:
    return client.server.app[SCHEDULER]  # type: ignore[union-attr]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_metrics_serve_collected_values_in_the_text_format(serve: Serve) -> None:
    client = await serve(FakeCollector("shop", value=42))
    await scheduler_of(client).collect_all()

    resp = await client.get("/metrics")

    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(await resp.text())
    assert got[("cachewarden_fake_value", (("target", "shop"),))] == 42
    assert got[("cachewarden_collector_up", (("collector", "fake"), ("target", "shop")))] == 1
    assert got[("cachewarden_collector_errors_total", (("collector", "fake"), ("target", "shop")))] == 0
    assert got[("cachewarden_build_info", (("target", "cachewarden"), ("version", __version__)))] == 1


async def test_metrics_negotiate_openmetrics(serve: Serve) -> None:
    client = await serve(FakeCollector("shop", value=3))
    await scheduler_of(client).collect_all()

    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    body = await resp.text()
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith("# EOF\n")
    assert 'cachewarden_fake_value{target="shop"} 3.0' in body
    assert "# TYPE cachewarden_collector_errors counter" in body


async def test_metrics_answer_while_a_collection_is_in_progress(serve: Serve) -> None:
    slow = FakeCollector("slow", value=None)
    client = await serve(slow)
    await scheduler_of(client).collect_all()
    slow.gate = asyncio.Event()  # the next collection hangs until the test opens the gate
    running = asyncio.create_task(scheduler_of(client).collect("fake", "slow"))
    await slow.started.wait()

    resp = await client.get("/metrics")

    assert resp.status == 200
    assert not running.done(), "the scrape must not have waited for the collection"
    assert samples(await resp.text())[("cachewarden_fake_run", (("target", "slow"),))] == 1
    slow.gate.set()
    await running


async def test_background_collection_fills_metrics_once_the_app_runs(
        serve: Serve) -> None:
    client = await serve(FakeCollector("shop", value=9, interval=0.05, timeout=0.05), run_collectors=True)

    async def collected() -> bool:
        text = await (await client.get("/metrics")).text()
        return ("cachewarden_fake_value", (("target", "shop"),)) in samples(text)

    await async_wait_for(collected, timeout=5, message="background collection visible in /metrics")


async def test_a_failed_collector_is_down_in_metrics_and_its_values_are_gone(
        serve: Serve) -> None:
    broken = FakeCollector("db", value=5)
    client = await serve(broken)
    await scheduler_of(client).collect_all()
    broken.error = ConnectionRefusedError("secret-host:3306 refused")
    await scheduler_of(client).collect_all()

    text = await (await client.get("/metrics")).text()

    got = samples(text)
    assert got[("cachewarden_collector_up", (("collector", "fake"), ("target", "db")))] == 0
    assert ("cachewarden_fake_value", (("target", "db"),)) not in got
    assert "secret-host" not in text, "error text never goes into label values"


async def test_healthz_answers_with_the_version(serve: Serve) -> None:
    client = await serve()
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "version": __version__}


def section(html: str, kind: str, target: str) -> str:
    start = html.index(f'<section id="{kind}-{target}">')
    return html[start:html.index("</section>", start)]


async def status_page(serve: Serve, collectors: Sequence[Collector]) -> str:
    client = await serve(*collectors)
    await scheduler_of(client).collect_all()
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    return await resp.text()


async def test_status_page_shows_healthy_and_failing_targets(serve: Serve) -> None:
    healthy = FakeCollector("good", checks=[Check("writable", Verdict.OK, "directory writable")])
    stale = FakeCollector("bad", checks=[Check.from_items("stale views", ["/srv/a.blade.php"], "none",
                                                          "{n} stale view(s)")])
    down = FakeCollector("down")
    down.error = ConnectionRefusedError()

    html = await status_page(serve, [healthy, stale, down])

    assert "2 problem(s) found" in html
    good = section(html, "fake", "good")
    assert '<span class="dot ok"></span>fake / good' in good
    assert '<li class="ok"><span class="dot ok"></span><b>writable</b>: directory writable' in good
    bad = section(html, "fake", "bad")
    assert '<span class="dot problem"></span>fake / bad' in bad
    assert '<li class="problem"><span class="dot problem"></span><b>stale views</b>: 1 stale view(s)' in bad
    assert "<li>/srv/a.blade.php</li>" in bad
    assert "collector down:</b> ConnectionRefusedError" in section(html, "fake", "down")


async def test_status_page_caps_long_item_lists(serve: Serve) -> None:
    paths = [f"/srv/views/{i:04}.blade.php" for i in range(ITEM_CAP + 25)]
    html = await status_page(serve, [FakeCollector("big", checks=[
        Check.from_items("orphaned", paths, "none", "{n} orphaned")])])

    assert html.count("<li>/srv/views/") == ITEM_CAP
    assert "<li>… and 25 more</li>" in html
    assert f"{ITEM_CAP + 25} orphaned" in html


async def test_status_page_escapes_paths(serve: Serve) -> None:
    hostile = '/srv/views/<script>alert("x")</script>&.blade.php'
    html = await status_page(serve, [FakeCollector("shop", checks=[
        Check.from_items("stale views", [hostile], "none", "{n} stale")])])

    assert '<script>alert("x")' not in html
    assert "<li>/srv/views/&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;.blade.php</li>" in html


async def test_status_page_without_targets_says_so(serve: Serve) -> None:
    html = await status_page(serve, [])
    assert "No targets configured." in html
    assert "checks healthy" not in html


async def test_status_page_counts_checks_not_targets(serve: Serve) -> None:
    checks = [Check("writable", Verdict.OK, "yes"), Check("readable", Verdict.OK, "yes"),
              Check("owner", Verdict.OK, "yes")]
    html = await status_page(serve, [FakeCollector("a", checks=checks),
                                     FakeCollector("b", checks=checks[:1])])
    assert '<p class="banner ok">All 4 checks healthy on 2 target(s).</p>' in html


async def test_status_page_before_the_first_collection_is_neutral_not_red(serve: Serve) -> None:
    client = await serve(FakeCollector("shop"), FakeCollector("www"))  # nothing collected yet

    html = await (await client.get("/")).text()

    assert 'class="banner problem"' not in html
    assert 'class="dot problem"' not in html
    assert '<p class="banner note">No problems so far; 2 of 2 target(s) not collected yet.</p>' in html
    assert '<span class="dot note"></span>fake / shop' in section(html, "fake", "shop")
    assert "not collected yet" in section(html, "fake", "shop")
    assert "<title>cachewarden — waiting</title>" in html


async def test_closing_the_app_closes_the_collectors(aiohttp_client: MakeClient) -> None:
    fake = FakeCollector()
    client = await aiohttp_client(create_app(Config(), collectors=[fake], run_collectors=True))
    await client.close()
    assert fake.closed
