"""The status page in a real browser: Debian's chromium, headless, against a real `cachewarden serve`.

The sidecar watches a Laravel app with stale and orphaned compiled views and a Redis nobody listens
for, with heal on. One browser serves every test here (one tab each). Screenshots are kept under
var/test-artifacts/ for the reader of a CI run; accessibility is judged by axe-core, injected into the
page as it was served.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ARTIFACTS, Browser, TabSession, require_axe, running_chromium
from tests.support.healing import (
    an_hour_ago,
    make_app_dir,
    require_blade,
    require_php_cli,
    token_file,
    write_compiled,
    write_view,
)
from tests.support.prometheus import Cachewarden, run_cachewarden
from tests.support.wait import async_wait_for, wait_for

pytestmark = pytest.mark.integration

RUNBOOKS = "https://runbooks.example.org/cachewarden/"


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - the test's own server
        return json.load(resp)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cachewarden]:
    require_blade()
    work = tmp_path_factory.mktemp("status-page")
    app = make_app_dir(work / "shop")
    source = write_view(app, "home", "<h1>{{ $title }}</h1>")
    write_compiled(app, str(source), mtime=an_hour_ago())  # older than its source: stale
    write_compiled(app, str(app / "resources" / "views" / "gone.blade.php"))  # source gone: orphaned
    config = {
        "laravel": [{"name": "shop", "root": str(app)}],
        # Nothing listens on port 1: the Redis target is down, a failing check with no heal plan.
        "redis": [{"name": "cache", "url": "redis://127.0.0.1:1/0"}],
        "collectors": {"redis": {"interval": "2s", "timeout": "1s"}, "views": {"interval": "2s"}},
        # PHP's CLI with Laravel's Blade compiler recompiles the stale view.
        "heal": {"token_file": str(token_file(work)), "token_env": "CACHEWARDEN_TEST_NO_SUCH_VARIABLE",
                 "php_cli": require_php_cli()},
        "alerts": {"runbook_base_url": RUNBOOKS},
    }
    with run_cachewarden(config, work / "serve") as cachewarden:
        status = f"{cachewarden.url}/status.json"
        wait_for(lambda: all(c["state"] != "not collected yet" for c in _json(status)["collectors"]),
                 timeout=30, message="every target collected once")
        # A deploy that cannot verify (the views are stale): the "Last deploys" block has a row.
        token = (work / "heal-token").read_text().strip()
        deploy = urllib.request.Request(  # noqa: S310 - the test's own server
            f"{cachewarden.url}/deploy?target=shop&phases=verify&timeout=1", method="POST",
            headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(deploy, timeout=30)  # noqa: S310 - the test's own server
        refused.value.close()  # the answer's socket, which the error holds
        assert refused.value.code == 409
        yield cachewarden


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with running_chromium(tmp_path_factory.mktemp("chromium")) as chromium:
        yield chromium


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


FINDINGS_JS = """[...document.querySelectorAll('#problems article')].map(a => ({
  title: a.querySelector('h3').textContent,
  text: a.textContent,
  runbooks: [...a.querySelectorAll('a')].map(l => l.href),
  curls: [...a.querySelectorAll('pre code')].map(c => c.textContent),
}))"""


async def test_each_failing_check_names_its_alert_runbook_and_a_curl_that_heals_it(
        served: Cachewarden, browser: Browser, tmp_path: Path) -> None:
    async with TabSession(browser) as tab:
        await tab.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1,
                       mobile=False)
        await tab.navigate(f"{served.url}/?refresh=1")
        await tab.evaluate("window.openedOnce = true")  # gone if the page ever reloads itself
        findings = {f["title"]: f for f in await tab.evaluate(FINDINGS_JS)}

        stale = findings["views / shop: stale views"]
        assert "Alert CachewardenViewsStale" in stale["text"]
        assert stale["runbooks"] == [f"{RUNBOOKS}CachewardenViewsStale.md"]
        assert "views.recompile — can run" in stale["text"]
        orphaned = findings["views / shop: orphaned views"]
        [curl] = orphaned["curls"]
        assert curl.startswith("curl -sS -X POST -H \"Authorization: Bearer $(cat ")
        down = findings["redis / cache: server reachable"]
        assert down["runbooks"] == [f"{RUNBOOKS}CachewardenRedisDown.md"]
        assert "Heal plan: none" in down["text"]
        assert not down["curls"]
        assert await tab.evaluate("document.querySelector('#heal').textContent.includes('No heal run')")

        assert stale["curls"] == [curl], "one command heals whatever is wrong with the target"
        assert curl.endswith(f"'{served.url}/heal?target=shop'")

        # The command as shown, pasted into a shell: it reads the token file and heals the views.
        shell = await asyncio.create_subprocess_exec("bash", "-c", curl, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(shell.communicate(), timeout=60)
        assert shell.returncode == 0
        healed = json.loads(out)
        assert (healed["target"], healed["result"]) == ("shop", "verified"), healed
        assert sorted(r["plan"] for r in healed["runs"]) == [
            "CachewardenViewsOrphaned", "CachewardenViewsStale"]

        # Refreshed in place: the notice appears, the page itself was not reloaded.
        await async_wait_for(lambda: tab.evaluate("!document.getElementById('changed').hidden"),
                             timeout=15, message="the page notices the heal run")
        assert await tab.evaluate("window.openedOnce === true")
        # The script wrote the time of its last answer (ISO with milliseconds; the server writes none).
        shown = await tab.evaluate("document.getElementById('updated').getAttribute('datetime')")
        assert shown.endswith("Z")
        await tab.screenshot(ARTIFACTS / "status-page.png")

        await tab.navigate(f"{served.url}/")
        rows = await tab.evaluate(
            "[...document.querySelectorAll('#heal tbody tr')].map(r => r.textContent)")
        assert len(rows) == 2
        assert all("verified" in r and "manual from 127.0.0.1" in r for r in rows), rows
        assert sorted(next(p for p in ("CachewardenViewsOrphaned", "CachewardenViewsStale") if p in r)
                      for r in rows) == ["CachewardenViewsOrphaned", "CachewardenViewsStale"]
        collectors = await tab.evaluate(
            "[...document.querySelectorAll('#collectors tbody tr')].map(r => r.innerText)")
        # Redis does not answer, but its collector does its job: it reports that.
        states = dict(r.split("\t")[:2] for r in collectors)
        assert states["redis / cache"] == states["views / shop"] == "collected", states
        assert set(states.values()) == {"collected"}, states
        assert tab.problems == [], "console errors, exceptions or failed loads"
    assert png_size(ARTIFACTS / "status-page.png")[0] == 1280


async def test_the_page_fits_a_phone_screen(served: Cachewarden, browser: Browser) -> None:
    async with TabSession(browser) as tab:
        await tab.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2,
                       mobile=True)
        await tab.navigate(f"{served.url}/")
        widths = await tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1] == 390, "nothing scrolls sideways"
        # Tables fold into one labelled line per cell.
        assert await tab.evaluate(
            "getComputedStyle(document.querySelector('#collectors td')).display") == "block"
        await tab.screenshot(ARTIFACTS / "status-page-phone.png")
        assert tab.problems == []
    assert png_size(ARTIFACTS / "status-page-phone.png")[0] == 390 * 2


LANDMARKS_JS = """({
  landmarks: ['body > header', 'header > nav', 'body > main', 'body > footer', 'header, nav, main, footer']
    .map(s => document.querySelectorAll(s).length),
  headings: [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].map(h => Number(h.tagName[1])),
})"""


async def test_axe_finds_no_contrast_landmark_or_heading_violation(served: Cachewarden,
                                                                   browser: Browser) -> None:
    axe = require_axe()
    async with TabSession(browser) as tab:
        await tab.navigate(f"{served.url}/")
        await tab.evaluate(axe)
        result = await tab.evaluate(
            "axe.run(document, {runOnly: {type: 'tag', values: "
            "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
            ".then(r => ({passes: r.passes.map(p => p.id), violations: r.violations.map(v => ({"
            "id: v.id, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)}))}))",
            await_promise=True)
        assert result["violations"] == []
        # The rules that matter most here did run and pass (an empty page would pass nothing).
        assert {"color-contrast", "landmark-one-main", "region", "heading-order",
                "page-has-heading-one"} <= set(result["passes"])
        # What axe judged included every block: findings, runs, deploys, collectors.
        assert await tab.evaluate("['problems', 'heal', 'deploys', 'collectors'].every(i => "
                                  "document.getElementById(i).querySelector('li, tr, article'))")
        dom = await tab.evaluate(LANDMARKS_JS)
        assert dom["landmarks"] == [1, 1, 1, 1, 4], "one of each, where each belongs, and no other"
        levels = dom["headings"]
        assert levels[0] == 1
        assert all(b <= a + 1 for a, b in itertools.pairwise(levels))
        assert tab.problems == []


async def test_without_javascript_the_page_reloads_itself_instead(served: Cachewarden,
                                                                 browser: Browser) -> None:
    async with TabSession(browser) as tab:
        await tab.call("Emulation.setScriptExecutionDisabled", value=True)
        await tab.navigate(f"{served.url}/?refresh=7")
        refresh = await tab.evaluate(
            "[...document.querySelectorAll('meta[http-equiv=refresh]')].map(m => m.content)")
        assert refresh == ["21"]
        assert await tab.evaluate("document.getElementById('changed').hidden")
        problems = (await asyncio.to_thread(_json, f"{served.url}/status.json"))["problems"]
        assert await tab.evaluate("document.querySelectorAll('#problems article').length") == problems > 0
        assert tab.problems == []
