"""A headless Debian `chromium` driven over the DevTools protocol, and axe-core injected into its pages.

The protocol is JSON over a websocket (aiohttp's client speaks it); a handful of its methods is all
the page tests need, so no driver library: Playwright and Selenium download browsers of their own,
and this one must be Debian's. One browser serves a whole test module; each test opens its own tab.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import check_alive, stop_process
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
# scripts/install-deps all puts it there (npm install --prefix var/node axe-core@…).
AXE = ROOT / "var" / "node" / "node_modules" / "axe-core" / "axe.min.js"
# Where the screenshots go: kept as the CI run's artifacts.
ARTIFACTS = ROOT / "var" / "test-artifacts"


def require_chromium() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("Debian's chromium is not installed (scripts/install-deps all)")
    return binary


def require_axe() -> str:
    if not AXE.is_file():
        pytest.skip(f"axe-core is not installed at {AXE} (scripts/install-deps all)")
    return AXE.read_text(encoding="utf-8")


@dataclass
class Browser:
    """A running headless chromium: `devtools` is its DevTools HTTP endpoint."""

    devtools: str
    log: Path

    def new_tab(self) -> str:
        """Open a blank tab; returns its websocket URL."""
        req = urllib.request.Request(f"{self.devtools}/json/new?about:blank",  # noqa: S310 - http only
                                     method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the browser's own http port
            return str(json.load(resp)["webSocketDebuggerUrl"])


@contextmanager
def running_chromium(work: Path) -> Iterator[Browser]:
    """Debian's chromium, headless, with a throw-away profile in `work`; stopped on exit."""
    binary = require_chromium()
    profile = work / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    log = work / "chromium.log"
    argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "about:blank"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Chromium writes the port it chose, then the browser's websocket path, once it listens.
        active = profile / "DevToolsActivePort"
        port = wait_for(lambda: check_alive(proc, log, "chromium") and active.exists()
                        and active.read_text().split("\n")[0].strip(), timeout=60,
                        message="chromium's DevTools port")
        yield Browser(f"http://127.0.0.1:{port}", log)
    finally:
        stop_process(proc)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@dataclass
class Tab:
    """One tab's DevTools session: calls, and every console message, exception and log entry seen."""

    ws: aiohttp.ClientWebSocketResponse
    problems: list[str] = field(default_factory=list)  # console errors/warnings, exceptions, log errors
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _events: dict[str, asyncio.Event] = field(default_factory=dict)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        answer = await asyncio.wait_for(future, timeout=30)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return dict(answer.get("result", {}))

    async def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=await_promise)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def event(self, method: str) -> asyncio.Event:
        return self._events.setdefault(method, asyncio.Event())

    async def navigate(self, url: str) -> None:
        loaded = self.event("Page.loadEventFired")
        loaded.clear()
        answer = await self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise RuntimeError(f"{url}: {answer['errorText']}")
        await asyncio.wait_for(loaded.wait(), timeout=30)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))
        return path

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            future = self._pending.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        method, params = message.get("method", ""), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.problems.append(f"console.{params['type']}: {' '.join(texts)}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.problems.append(f"exception: {details.get('exception', {}).get('description', details)}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            entry = params["entry"]
            self.problems.append(f"log {entry['level']}: {entry.get('text')} {entry.get('url', '')}".strip())
        self.event(method).set()


class TabSession:
    """`async with TabSession(browser) as tab`: a fresh tab with console, log and page events on."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Tab:
        self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(self.browser.new_tab(), max_msg_size=64 * 1024 * 1024)
        tab = Tab(ws)

        async def read() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    tab._dispatch(json.loads(msg.data))

        self._reader = asyncio.create_task(read())
        for domain in ("Page", "Runtime", "Log"):
            await tab.call(f"{domain}.enable")
        return tab

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._session is not None:
            await self._session.close()
