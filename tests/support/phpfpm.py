"""A real php-fpm8.2 master for tests: its own php.ini, conf.d scan dir, pool file and socket in tmp_path.

`start_fpm` writes the files and starts `php-fpm8.2 --nodaemonize -R` (tests run as root) with
PHP_INI_SCAN_DIR pointing at the private conf.d, so the host's /etc/php configuration plays no part.
The `php_fpm` fixture hands out a factory and stops every master it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import textwrap
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from exporter.php import fastcgi
from tests.support.processes import check_alive, stop_process
from tests.support.wait import async_wait_for, free_port, wait_for

FPM_BINARY = "php-fpm8.2"
STATUS_PATH = "/fpm-status"

# A script that creates the file named by ?started= and then holds its worker until the file named by
# ?release= exists (or 30 s pass), so tests can saturate a pool and let it go without guessing durations.
HOLD_SCRIPT = """<?php
$release = $_GET['release'] ?? '';
if (isset($_GET['started'])) {
    touch($_GET['started']);
}
$deadline = microtime(true) + 30;
while (!file_exists($release) && microtime(true) < $deadline) {
    usleep(20000);
    clearstatcache();
}
echo "released";
"""


def require_fpm() -> str:
    path = shutil.which(FPM_BINARY)
    if path is None:
        pytest.skip(f"{FPM_BINARY} is not installed (apt-get install php8.2-fpm php8.2-opcache)")
    return path


@dataclass
class Fpm:
    """A running (or stopped) FPM master and the files that configure it."""

    root: Path
    address: str
    pool_config: Path
    php_ini: Path
    conf_d: Path
    docroot: Path
    agent_dir: Path
    pool: str = "app"
    process: subprocess.Popen[bytes] | None = None
    _env: dict[str, str] = field(default_factory=dict)
    prefix: Path | None = None  # FPM's -p, for layouts whose include= is relative to it

    @property
    def log(self) -> Path:
        return self.root / "fpm.log"

    def start(self) -> None:
        binary = require_fpm()
        prefix = [] if self.prefix is None else ["-p", str(self.prefix)]
        self.process = subprocess.Popen(
            [binary, "--nodaemonize", "-R", "--fpm-config", str(self.pool_config), "-c", str(self.php_ini),
             *prefix],
            env=self._env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop() can reach workers a killed master left
        )
        wait_for(self._ready, timeout=30, interval=0.1,
                 message=f"php-fpm on {self.address} answering with every worker idle")

    def _ready(self) -> bool:
        """True once a real FastCGI request is answered and every worker the master forked is idle.

        A socket that accepts proves only that the master has called listen(): its workers may still be
        forking or initialising, and FPM's idle/active counts lag behind them. With a status page, ready
        means: the master's children (from /proc) all appear in the scoreboard, all idle but the one
        answering, in the per-process list and in the pool's counters alike. Without one, a request
        answered is the best sign there is.

        Waiting for every worker also keeps tests out of a php-fpm8.2 crash: fpm_get_status(), which the
        OPcache agent calls, segfaults the calling worker while a sibling's scoreboard slot is in use
        but the sibling has not reached accept() yet (php-src GH-18595, GH-19974); the request is then
        reset. The status page reads the same scoreboard without that fault.
        """
        assert self.process is not None
        check_alive(self.process, self.log, "php-fpm")
        if not self._has_status_page():
            response = self.get_sync("hold.php", f"release={self.docroot / 'hold.php'}", timeout=5)
            return response.status == 200
        response = self.get_sync(STATUS_PATH, "json&full", timeout=5)
        if response.status != 200:
            return False
        status = json.loads(response.body)
        workers = _children(self.process.pid)
        states = [p.get("state") for p in status.get("processes", [])]
        return (
            len(workers) > 0
            and status.get("total processes") == len(workers) == len(states)
            and status.get("active processes") == 1
            and status.get("idle processes") == len(workers) - 1
            and states.count("Running") == 1
            and states.count("Idle") == len(workers) - 1
        )

    def _has_status_page(self) -> bool:
        """Whether the pool file sets pm.status_path to STATUS_PATH (as every pool start_fpm writes does)."""
        pairs = (line.partition("=") for line in self.pool_config.read_text(errors="replace").splitlines())
        return any(k.strip() == "pm.status_path" and v.strip() == STATUS_PATH for k, _, v in pairs)

    def stop(self) -> None:
        if self.process is None:
            return
        pgid = self.process.pid
        stop_process(self.process, timeout=10)
        self.process = None
        # A master killed after the timeout leaves its workers running, still holding the listening
        # socket: the next master's clients would reach them and be reset. End the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        wait_for(lambda: not _group_alive(pgid), timeout=10, message=f"php-fpm process group {pgid} gone")

    def restart(self) -> None:
        self.stop()
        self.start()

    def hold(self, tag: str) -> tuple[asyncio.Task[fastcgi.Response], Path]:
        """Occupy one worker until the returned release file is touched; returns once it is occupied."""
        started, release = self.root / f"{tag}.started", self.root / f"{tag}.release"
        task = asyncio.create_task(self.get("hold.php", f"started={started}&release={release}", timeout=40))
        return task, release

    async def wait_held(self, tag: str) -> None:
        """Poll (without blocking the loop the holder runs on) until the worker is occupied."""
        started = self.root / f"{tag}.started"

        async def held() -> bool:
            return started.exists()

        await async_wait_for(held, timeout=10, message=f"worker held by {tag}")

    def script(self, name: str, text: str, mtime: float | None = None) -> Path:
        """Write a script into the docroot, optionally with an explicit mtime."""
        path = self.docroot / name
        path.write_text(text)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    async def get(self, script: str, query: str = "", *, timeout: float = 5.0) -> fastcgi.Response:
        """Request a script (docroot-relative, or the status path) the way a web server would."""
        filename = script if script == STATUS_PATH else str(self.docroot / script.lstrip("/"))
        name = script if script.startswith("/") else "/" + script
        params = {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REQUEST_METHOD": "GET",
            "SCRIPT_FILENAME": filename,
            "SCRIPT_NAME": name,
            "REQUEST_URI": name + (f"?{query}" if query else ""),
            "QUERY_STRING": query,
            "DOCUMENT_ROOT": str(self.docroot),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
        }
        return await fastcgi.request(self.address, params, connect_timeout=2, read_timeout=timeout)

    def get_sync(self, script: str, query: str = "", *, timeout: float = 5.0) -> fastcgi.Response:
        """`get` for synchronous code; runs its own loop in a thread so it works inside async tests too."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.get(script, query, timeout=timeout)).result()


def _children(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is `pid`, read from /proc."""
    return [child for child, state, parent, _ in _procs() if state != "Z" and parent == pid]


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in process group `pgid`."""
    return any(state != "Z" and group == pgid for _, state, _, group in _procs())


def _procs() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process, from /proc/<pid>/stat."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        out.append((int(entry.name), state, int(ppid), int(pgrp)))
    return out


def _ini(settings: Mapping[str, object]) -> str:
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def start_fpm(
    root: Path,
    *,
    opcache: Mapping[str, str | int] | None = None,
    conf_d: Mapping[str, str] | None = None,
    pool: Mapping[str, str | int] | None = None,
    tcp: bool = False,
    start: bool = True,
    load_opcache: bool = True,
    env: Mapping[str, str] | None = None,
) -> Fpm:
    """Write a private FPM setup under `root` and start it.

    `opcache` settings go into conf.d/10-opcache.ini (which loads the extension unless `load_opcache`
    is False); `conf_d` adds more files by name; `pool` adds or overrides pool directives (pm,
    pm.max_children, php_admin_value[...]). `env` adds variables to FPM's environment, which `${NAME}`
    in its ini and pool files is expanded from.
    """
    root.mkdir(parents=True, exist_ok=True)
    docroot, agent_dir, scan = root / "www", root / "agent", root / "conf.d"
    for d in (docroot, agent_dir, scan):
        d.mkdir(exist_ok=True)
    php_ini = root / "php.ini"
    php_ini.write_text(_ini({"display_errors": "Off", "log_errors": "On", "error_log": root / "php.log"}))
    base_opcache = {"opcache.enable": 1, "opcache.memory_consumption": 64, "opcache.jit": "off"}
    opcache_ini = _ini({**base_opcache, **(opcache or {})})
    load = "zend_extension=opcache.so\n" if load_opcache else ""
    (scan / "10-opcache.ini").write_text(load + opcache_ini)
    for name, text in (conf_d or {}).items():
        (scan / name).write_text(textwrap.dedent(text))
    address = f"127.0.0.1:{free_port()}" if tcp else f"unix:{root / 'fpm.sock'}"
    pool_settings: dict[str, str | int] = {
        "listen": address.removeprefix("unix:"),
        "pm": "static",
        "pm.max_children": 2,
        "pm.status_path": STATUS_PATH,
        "catch_workers_output": "yes",
        "request_terminate_timeout": 60,
        **(pool or {}),
    }
    conf = root / "php-fpm.conf"
    conf.write_text(
        f"[global]\npid = {root / 'fpm.pid'}\nerror_log = {root / 'fpm.log'}\ndaemonize = no\n\n"
        "[app]\n" + "".join(f"{k} = {v}\n" for k, v in pool_settings.items())
    )
    (docroot / "hold.php").write_text(HOLD_SCRIPT)
    fpm_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PHP_INI_SCAN_DIR": str(scan), **(env or {})}
    fpm = Fpm(root, address, conf, php_ini, scan, docroot, agent_dir, _env=fpm_env)
    if start:
        fpm.start()
    return fpm


FpmFactory = Callable[..., Fpm]


@pytest.fixture
def php_fpm(tmp_path: Path) -> Iterator[FpmFactory]:
    """A factory `php_fpm(name="fpm", **start_fpm options) -> Fpm`; every master is stopped afterwards."""
    started: list[Fpm] = []

    def factory(name: str = "fpm", **options: object) -> Fpm:
        fpm = start_fpm(tmp_path / name, **options)  # type: ignore[arg-type]
        started.append(fpm)
        return fpm

    yield factory
    for fpm in started:
        fpm.stop()
