"""What the status page says about a failing check: its alerts, runbooks, heal plan and `curl`; the heal
runs; the collectors; and /status.json, which an open page polls. Real views collector on a temporary
Laravel-shaped directory; the browser tests are in tests/integration/test_status_page_browser.py."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import SCHEDULER, create_app
from exporter.check_alerts import (
    NOT_FROM_A_CHECK,
    alerts_for_check,
    alerts_for_collector_down,
    mapped_alerts,
    mapped_checks,
)
from exporter.collectors.base import Check, Verdict
from exporter.config import ALERT_DEFAULTS, Config, parse
from exporter.heal.advice import heal_curl, server_url
from exporter.heal.routes import HEAL_RUNNER
from exporter.heal.runner import HealRunner
from exporter.heal.runs import Run
from exporter.heal.store import MemoryStore
from exporter.heal.token import read_heal_state
from exporter.report import Report, TargetReport
from exporter.scheduler import Scheduler
from exporter.status_page import build_status_page, merge_runs, poll_seconds, who
from tests.support.fakes import FakeCollector
from tests.support.healing import (
    AUTH,
    alert,
    an_hour_ago,
    make_app_dir,
    payload,
    token_file,
    write_compiled,
    write_view,
)

ROOT = Path(__file__).resolve().parents[2]
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


# --- the check -> alert table --------------------------------------------------------------------

def test_every_mapped_alert_is_shipped_and_has_a_runbook() -> None:
    rules = "\n".join(p.read_text() for p in (ROOT / "alerts").glob("*.yml"))
    for name in mapped_alerts():
        assert name in ALERT_DEFAULTS, name
        assert f"alert: {name}\n" in rules, name
        assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file(), name


def test_every_shipped_alert_is_mapped_from_a_check_or_said_why_not() -> None:
    assert set(ALERT_DEFAULTS) - mapped_alerts() == set(NOT_FROM_A_CHECK)
    assert not mapped_alerts() & set(NOT_FROM_A_CHECK)


def test_every_mapped_check_is_one_its_collector_reports() -> None:
    sources = {path.stem: path.read_text() for path in (ROOT / "exporter" / "collectors").glob("*.py")}
    kinds = {m.group(1): stem for stem, text in sources.items()
             for m in re.finditer(r'^    kind(?:: ClassVar\[str\])? = "([a-z_]+)"', text, re.M)}
    everything = "\n".join(sources.values())
    for kind, check in mapped_checks():
        assert kind in kinds, kind
        assert f'"{check}"' in everything, f"no collector reports a check named {check!r}"


def test_a_collector_that_cannot_collect_maps_to_collector_down_and_the_targets_own_down_alert() -> None:
    assert alerts_for_collector_down("redis") == ("CachewardenCollectorDown", "CachewardenRedisDown")
    assert alerts_for_collector_down("views") == ("CachewardenCollectorDown",)
    assert alerts_for_check("views", Check("footerless views", Verdict.PROBLEM, "")) == ()
    assert alerts_for_check("discovery", Check("redis/cache", Verdict.PROBLEM, "")) == (
        "CachewardenTargetConfigProblem",)


def test_a_bootstrap_cache_check_maps_to_the_alert_of_each_cache_it_lists() -> None:
    stale = Check.from_items("stale bootstrap caches", [
        "routes: /srv/shop/bootstrap/cache/routes-v7.php is older than routes/web.php",
        "events: /srv/shop/bootstrap/cache/events.php is older than app/",
        "config: /srv/shop/bootstrap/cache/config.php is older than .env"], "", "{n}")
    served = Check.from_items("served bootstrap caches", ["config", "routes"], "", "{n}")

    assert alerts_for_check("laravel_caches", stale) == (
        "CachewardenLaravelConfigStale", "CachewardenLaravelRoutesStale")  # events: no alert
    assert alerts_for_check("laravel_caches", served) == ("CachewardenLaravelRoutesStale",)
    assert alerts_for_check("laravel_caches", Check("cached config values", Verdict.PROBLEM,
                                                    "PHP could not load it")) == ()


# --- the curl ------------------------------------------------------------------------------------

def fake_curl(command: str, env: dict[str, str] | None = None) -> list[str]:
    """The argv `command` gives curl when bash runs it (curl replaced by a function that prints it)."""
    script = 'curl() { printf "%s\\0" "$@"; }\n' + command
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True, env=env or {}).stdout
    return out.decode().split("\0")[:-1]


def test_the_curl_reads_the_token_file_and_quotes_every_name(tmp_path: Path) -> None:
    secret_dir = tmp_path / "my secrets; $(touch pwned)"
    secret_dir.mkdir()
    token = token_file(secret_dir)
    config = parse({"heal": {"token_file": str(token)}})
    target = "shop'; touch pwned; echo '&x=1"

    query = {"action": "views.recompile", "target": target}
    argv = fake_curl(heal_curl(config, server_url(("0.0.0.0", 9590)), query))

    assert argv == ["-sS", "-X", "POST", "-H", "Authorization: Bearer s3cret-heal-token",
                    "http://127.0.0.1:9590/heal?action=views.recompile&target=shop%27%3B+touch+pwned%3B"
                    "+echo+%27%26x%3D1"]
    assert not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()


def test_the_curl_names_the_token_variable_when_the_token_comes_from_the_environment() -> None:
    command = heal_curl(Config(), server_url(("::", 9590)), {"action": "opcache.reset", "target": "www"})

    assert "${CACHEWARDEN_HEAL_TOKEN}" in command
    argv = fake_curl(command, {"CACHEWARDEN_HEAL_TOKEN": "from-the-env-123"})
    assert argv[4:] == ["Authorization: Bearer from-the-env-123",
                        "http://[::1]:9590/heal?action=opcache.reset&target=www"]


@pytest.mark.parametrize(("listen", "url"), [
    (("0.0.0.0", 9590), "http://127.0.0.1:9590"),
    (("10.0.0.7", 9100), "http://10.0.0.7:9100"),
    (("::", 9590), "http://[::1]:9590"),
    (("fd00::7", 9590), "http://[fd00::7]:9590"),
    (("sidecar.local", 80), "http://sidecar.local:80"),
])
def test_the_url_is_the_listen_address_with_wildcards_as_loopback(listen: tuple[str, int], url: str) -> None:
    assert server_url(listen) == url


def test_the_url_is_https_when_serve_speaks_tls() -> None:
    assert server_url(("0.0.0.0", 9590), tls=True) == "https://127.0.0.1:9590"


def test_who_tells_webhook_manual_and_cli_apart() -> None:
    assert who(Run("shop", ["views.recompile"], False, "10.1.2.3", plan="CachewardenViewsStale",
                   fingerprint="c0ffee")) == "webhook from 10.1.2.3"
    assert who(Run("shop", ["views.recompile"], False, "127.0.0.1", plan="CachewardenViewsStale")) \
        == "manual from 127.0.0.1"
    assert who(Run("shop", ["views.recompile"], False, "127.0.0.1")) == "manual from 127.0.0.1"
    assert who(Run("shop", ["views.recompile"], False, "cli")) == "CLI (cachewarden heal)"


@pytest.mark.parametrize(("asked", "got"), [
    (None, 10), ("1", 1), ("0", 1), ("5", 5), ("99999", 3600), ("-3", 10), ("2.5", 10), ("١", 10),
    ("9" * 50, 10)])
def test_the_refresh_interval_is_whole_seconds_within_bounds(asked: str | None, got: int) -> None:
    assert poll_seconds(asked) == got


# --- the page ---------------------------------------------------------------------------------------

def stale_app(tmp_path: Path) -> Path:
    app = make_app_dir(tmp_path / "shop")
    source = write_view(app, "home", "<p>x</p>")
    write_compiled(app, str(source), mtime=an_hour_ago())
    return app


async def page_of(aiohttp_client: MakeClient, config: Config, *, collectors: list[Any] | None = None,
                  listen: tuple[str, int] = ("0.0.0.0", 9590)) -> tuple[Client, str]:
    app = create_app(config, collectors=collectors, run_collectors=False,
                     heal_state=read_heal_state(config.heal), server_url=server_url(listen))
    client = await aiohttp_client(app)
    await client.server.app[SCHEDULER].collect_all()  # type: ignore[union-attr]
    resp = await client.get("/")
    assert resp.status == 200
    return client, await resp.text()


def finding(html: str, title: str) -> str:
    start = html.index("<h3 id=\"finding-", html.index(title) - 40)
    return html[start:html.index("</article>", start)]


async def test_a_failing_check_shows_its_alert_runbook_plan_and_curl(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    token = token_file(tmp_path)
    config = parse({"laravel": [{"name": "shop", "root": str(stale_app(tmp_path))}],
                    "heal": {"token_file": str(token), "php_cli": "/usr/bin/php"},
                    "alerts": {"runbook_base_url": "https://wiki.example/rb/"}})

    _, html = await page_of(aiohttp_client, config, listen=("127.0.0.1", 9999))

    stale = finding(html, "views / shop: stale views")
    assert "<dt>Alert CachewardenViewsStale</dt>" in stale
    assert '<a href="https://wiki.example/rb/CachewardenViewsStale.md">' in stale
    assert "Heal plan: views.recompile — can run" in stale
    assert (f"<pre><code>curl -sS -X POST -H &#34;Authorization: Bearer $(cat {token})&#34; &#39;"
            "http://127.0.0.1:9999/heal?target=shop&#39;</code></pre>") in stale
    assert "s3cret-heal-token" not in html


async def test_without_a_token_the_plan_is_shown_as_unable_to_run_and_no_curl(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    config = parse({"laravel": [{"name": "shop", "root": str(stale_app(tmp_path))}],
                    "heal": {"token_env": "CACHEWARDEN_TEST_NO_SUCH_VARIABLE"}})

    _, html = await page_of(aiohttp_client, config)

    stale = finding(html, "views / shop: stale views")
    assert "views.recompile — cannot run: heal is disabled: no token" in stale
    assert "curl" not in stale


async def test_a_plan_that_only_a_restart_can_carry_out_says_so_without_a_restart_command(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    sock = tmp_path / "fpm.sock"
    config = parse({"php_fpm": [{"name": "www", "address": f"unix:{sock}", "agent_dir": str(tmp_path)}],
                    "heal": {"token_file": str(token_file(tmp_path))}})
    preload = Check("opcache.preload", Verdict.PROBLEM, "2 preloaded script(s) older than their source")
    report = Report((TargetReport("opcache", "www", True, None, 0.1, 1.0, (preload,)),),
                    read_heal_state(config.heal))
    runner = HealRunner(config, Scheduler([]), MemoryStore())

    page = build_status_page(report, config, runner, "http://127.0.0.1:9590")

    [link] = page.findings[0].alerts
    assert link.name == "CachewardenOpcachePreloadStale"
    assert link.heal is not None
    assert not link.heal.can_run
    assert link.heal.curl is None
    assert "php_fpm[www].restart_command is not set" in link.heal.why


async def test_a_check_no_alert_watches_says_so(aiohttp_client: MakeClient) -> None:
    fake = FakeCollector("bad", checks=[Check("odd", Verdict.PROBLEM, "something odd")])

    _, html = await page_of(aiohttp_client, Config(), collectors=[fake])

    assert "No shipped alert watches this check." in finding(html, "fake / bad: odd")


async def test_a_collector_that_fails_is_a_finding_and_counts_in_collector_health(
        aiohttp_client: MakeClient) -> None:
    fake = FakeCollector("db")
    fake.error = ConnectionRefusedError("refused")
    client, html = await page_of(aiohttp_client, Config(), collectors=[fake])

    down = finding(html, "fake / db: collector down")
    assert "<dt>Alert CachewardenCollectorDown</dt>" in down
    assert "CachewardenCollectorDown.md" in down
    row = html[html.index("<tr data-collector>"):]
    row = row[:row.index("</tr>")]
    assert '<td data-label="collection" data-field="state">collection failing</td>' in row
    assert '<td data-label="failed runs" data-field="errors">1</td>' in row

    status = await (await client.get("/status.json")).json()
    assert status["problems"] == 1
    assert status["title"] == "cachewarden — 1 problem(s)"
    [collector] = status["collectors"]
    assert collector | {"duration": None} == {
        "id": "fake/db", "state": "collection failing", "duration": None, "last_success": "never",
        "errors": 1}


async def test_status_json_fingerprint_changes_with_findings_and_not_with_time(
        aiohttp_client: MakeClient) -> None:
    fake = FakeCollector("app", checks=[Check("ok", Verdict.OK, "fine")])
    client, _ = await page_of(aiohttp_client, Config(), collectors=[fake])
    scheduler = client.server.app[SCHEDULER]  # type: ignore[union-attr]

    first = await (await client.get("/status.json")).json()
    await scheduler.collect_all()
    again = await (await client.get("/status.json")).json()
    fake.checks = [Check("ok", Verdict.PROBLEM, "now broken")]
    await scheduler.collect_all()
    changed = await (await client.get("/status.json")).json()

    assert first["fingerprint"] == again["fingerprint"]
    assert changed["fingerprint"] != first["fingerprint"]
    assert again["generated_at"] >= first["generated_at"]


async def test_hostile_names_are_escaped_in_findings_and_commands(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    name = 'x"><script>alert(1)</script>\x1b[31m'
    fake = FakeCollector(name, checks=[Check("stale views", Verdict.PROBLEM, "<b>bold</b>")])

    _, html = await page_of(aiohttp_client, Config(), collectors=[fake])

    assert "<script>alert" not in html
    assert "<b>bold</b>" not in html
    assert "\x1b" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[31m" in html


async def test_the_page_lists_the_last_heal_runs_with_result_duration_and_who(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    config = parse({"laravel": [{"name": "shop", "root": str(stale_app(tmp_path))}],
                    "heal": {"token_file": str(token_file(tmp_path)), "dry_run": True}})
    client, _ = await page_of(aiohttp_client, config)
    runner = client.server.app[HEAL_RUNNER]  # type: ignore[union-attr]
    await runner.run_action("views.recompile", "shop", True, "cli")

    html = await (await client.get("/")).text()

    runs = html[html.index('<section id="heal"'):]
    runs = runs[:runs.index("</section>")]
    assert "<td data-label=\"plan or action\">views.recompile</td>" in runs
    assert "(dry run)" in runs
    assert "CLI (cachewarden heal)" in runs
    assert re.search(r'<td data-label="took">\d+ ms</td>', runs)


async def test_the_content_security_policy_allows_exactly_the_inline_script_and_style(
        aiohttp_client: MakeClient) -> None:
    client, html = await page_of(aiohttp_client, Config(), collectors=[FakeCollector("app")])
    policy = (await client.get("/")).headers["Content-Security-Policy"]

    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    script = re.findall(r"<script>(.*?)</script>", html, re.S)
    style = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(script) == len(style) == 1
    assert f"script-src {sha(script[0])};" in policy
    assert f"style-src {sha(style[0])};" in policy
    assert "default-src 'none'" in policy


async def test_a_run_an_alertmanager_delivery_started_is_listed_as_the_webhooks(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    config = parse({"laravel": [{"name": "shop", "root": str(stale_app(tmp_path))}],
                    "heal": {"token_file": str(token_file(tmp_path)), "dry_run": True}})
    client, _ = await page_of(aiohttp_client, config)

    resp = await client.post("/heal", json=payload(alert("CachewardenViewsStale")), headers=AUTH)
    assert resp.status == 200
    await client.server.app[HEAL_RUNNER].wait_idle()  # type: ignore[union-attr]
    html = await (await client.get("/")).text()

    runs = html[html.index('<section id="heal"'):]
    assert '<td data-label="plan or action">CachewardenViewsStale</td>' in runs
    assert "webhook from 127.0.0.1" in runs


def test_runs_from_the_audit_stream_merge_with_local_ones_and_malformed_entries_are_skipped() -> None:
    local = Run("shop", ["views.recompile"], False, "127.0.0.1")
    local.started_at, local.finished_at, local.result = 1000.0, 1001.0, "verified"
    recorded = [
        (1500.0, {"run_id": "aa", "steps": ["opcache.reset"], "duration_seconds": 0.5, "target": "www",
                  "who": "10.0.0.9", "fingerprint": "f", "plan": "CachewardenOpcacheMissingScripts",
                  "result": "verified", "dry_run": False}),
        (1001.0, {"run_id": local.id, "steps": ["views.recompile"], "duration_seconds": 1.0,
                  "target": "shop", "who": "127.0.0.1", "result": "verified"}),  # the local run itself
        (1400.0, {"run_id": "bb", "steps": "not a list", "duration_seconds": 1}),
        (1300.0, {"run_id": "cc", "steps": ["views.recompile"], "duration_seconds": None}),
    ]

    rows = merge_runs([local], recorded)

    assert [(r.id, r.who, r.what) for r in rows] == [
        ("aa", "webhook from 10.0.0.9", "CachewardenOpcacheMissingScripts"),
        (local.id, "manual from 127.0.0.1", "views.recompile")]
    assert rows[0].started_at == 1499.5


async def test_a_plan_the_heal_judged_unable_to_run_says_why_and_offers_no_curl(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    config = parse({"laravel": [{"name": "shop", "root": str(stale_app(tmp_path))}],
                    "heal": {"token_file": str(token_file(tmp_path))}})  # no PHP to compile views with

    _, html = await page_of(aiohttp_client, config)

    stale = finding(html, "views / shop: stale views")
    assert "views.recompile — cannot run: no PHP to compile the views of &#39;shop&#39; with" in stale
    assert "curl" not in stale
