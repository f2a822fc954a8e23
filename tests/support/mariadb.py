"""A private MariaDB server with performance_schema ON: its own datadir, socket and free port.

The shared server on 3306 runs with performance_schema OFF (MariaDB's default, fixed at start), so
anything that needs statement digests starts one of these. Also used by bench/bench_datastores.py.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import check_alive, stop_process
from tests.support.wait import free_port, wait_for

BINARIES = ("mariadbd", "mariadb-install-db", "mariadb")


def missing_binary() -> str | None:
    return next((b for b in BINARIES if shutil.which(b) is None), None)


class PrivateMariaDB:
    """`start()`/`stop()` may be called repeatedly: the datadir survives a stop."""

    def __init__(self, base: Path, *, digests_size: int = 10_000) -> None:
        self.base = base
        self.datadir = base / "data"
        self.socket = base / "mysqld.sock"
        self.port = free_port()
        self.digests_size = digests_size
        self._proc: subprocess.Popen[bytes] | None = None
        self._installed = False

    def _install(self) -> None:
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )
        self._installed = True

    def start(self) -> None:
        if not self._installed:
            self._install()
        log = (self.base / "error.log").open("ab")
        self._proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve",
             f"--pid-file={self.base / 'mariadbd.pid'}", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             "--performance-schema=ON", f"--performance-schema-digests-size={self.digests_size}",
             "--max-connections=100"],
            stdout=log, stderr=log,
        )
        log.close()
        wait_for(self._answers, timeout=60, message=f"mariadbd on port {self.port} answering")

    def _answers(self) -> bool:
        if self._proc is not None:
            check_alive(self._proc, self.base / "error.log", "mariadbd")
        return self.sql_ok("SELECT 1")

    def stop(self) -> None:
        if self._proc is None:
            return
        self.resume()  # a paused server would not act on SIGTERM
        stop_process(self._proc, signal.SIGTERM, timeout=60)
        self._proc = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and accepted, nothing is answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def sql_ok(self, statement: str) -> bool:
        return subprocess.run(
            ["mariadb", "--no-defaults", "-uroot", f"--socket={self.socket}", "-e", statement],
            capture_output=True, timeout=30, check=False,
        ).returncode == 0

    def sql(self, statement: str, database: str = "") -> list[list[str]]:
        """Run statements as root over the socket; the rows of the last result, tab-separated."""
        out = subprocess.run(
            ["mariadb", "--no-defaults", "-uroot", f"--socket={self.socket}", "--batch",
             "--skip-column-names", "-e", statement, *([database] if database else [])],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        return [line.split("\t") for line in out.splitlines()]

    def url(self, user: str = "root", database: str = "") -> str:
        return f"mysql+asyncmy://{user}@127.0.0.1:{self.port}/{database}"


def start_private_mariadb(base: Path, **kwargs: int) -> PrivateMariaDB:
    server = PrivateMariaDB(base, **kwargs)
    try:
        server.start()
        # 127.0.0.1 connections need their own account: install-db only creates root@localhost.
        server.sql("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; "
                   "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    if (binary := missing_binary()) is not None:
        pytest.skip(f"{binary} is not installed (apt-get install mariadb-server)")
    server = start_private_mariadb(tmp_path_factory.mktemp("mariadb"))
    try:
        yield server
    finally:
        server.stop()
