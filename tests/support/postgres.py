"""Private PostgreSQL 15 clusters: their own datadir, socket directory and free port.

initdb and postgres refuse to run as root, so both run as the `postgres` user, and the cluster lives in
a directory that user owns directly under /tmp (pytest's tmp_path sits below a root-only 0700 directory
postgres cannot enter). The directory is removed on stop.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.processes import check_alive, stop_process
from tests.support.wait import free_port, wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def missing_binary() -> str | None:
    for name in ("initdb", "postgres"):
        if not (PG_BIN / name).exists():
            return str(PG_BIN / name)
    if shutil.which("psql") is None:
        return "psql"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "the postgres user"
    return None


class PrivatePostgres:
    """One cluster; `start()`/`stop()` may be called repeatedly, `destroy()` removes it."""

    def __init__(self, *, preload_pg_stat_statements: bool) -> None:
        self.preload = preload_pg_stat_statements
        self.base = Path(tempfile.mkdtemp(prefix="cachewarden-pg-"))
        self.datadir = self.base / "data"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        owner = pwd.getpwnam("postgres")
        self._uid, self._gid = owner.pw_uid, owner.pw_gid
        os.chown(self.base, self._uid, self._gid)

    def _as_postgres(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, user=self._uid, group=self._gid, extra_groups=[], cwd=self.base,
                                **kwargs)  # type: ignore[call-overload]

    def init(self) -> None:
        proc = self._as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres",
             "--no-sync", "--no-instructions"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        out, _ = proc.communicate(timeout=120)
        if proc.returncode:
            raise RuntimeError(f"initdb failed: {out.decode(errors='replace')}")

    def start(self) -> None:
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.base}",
                    "-c", "fsync=off", "-c", "max_connections=50", "-c", "shared_buffers=16MB"]
        if self.preload:
            settings += ["-c", "shared_preload_libraries=pg_stat_statements"]
        log = (self.base / "postgres.log").open("ab")
        self._proc = self._as_postgres(
            [str(PG_BIN / "postgres"), "-D", str(self.datadir), "-p", str(self.port), *settings],
            stdout=log, stderr=log,
        )
        log.close()
        wait_for(self._answers, timeout=60, message=f"postgres on port {self.port} answering")

    def _answers(self) -> bool:
        if self._proc is not None:
            check_alive(self._proc, self.base / "postgres.log", "postgres")
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
             "-Atc", "SELECT 1"], capture_output=True, timeout=30, check=False,
        ).returncode == 0

    def pause(self) -> None:
        """Freeze the cluster (SIGSTOP to the postmaster and every backend): connections stay open and
        new ones are accepted by the kernel, but nothing answers."""
        for proc in self._processes():
            proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for proc in self._processes():
            proc.send_signal(signal.SIGCONT)

    def _processes(self) -> list[psutil.Process]:
        if self._proc is None or self._proc.poll() is not None:
            return []
        postmaster = psutil.Process(self._proc.pid)
        return [postmaster, *postmaster.children(recursive=True)]

    def stop(self) -> None:
        if self._proc is None:
            return
        self.resume()  # a frozen cluster would not act on SIGINT
        stop_process(self._proc, signal.SIGINT, timeout=60)  # "fast" shutdown: disconnect clients
        self._proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def sql(self, statement: str, database: str = "postgres") -> list[list[str]]:
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-AtF", "\t", "-c", statement],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        return [line.split("\t") for line in out.splitlines()]

    def url(self, user: str = "postgres", database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{user}@127.0.0.1:{self.port}/{database}"


def start_private_postgres(*, preload_pg_stat_statements: bool) -> PrivatePostgres:
    server = PrivatePostgres(preload_pg_stat_statements=preload_pg_stat_statements)
    try:
        server.init()
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


def _cluster(preload: bool) -> Iterator[PrivatePostgres]:
    if (binary := missing_binary()) is not None:
        pytest.skip(f"{binary} is missing (apt-get install postgresql-15)")
    server = start_private_postgres(preload_pg_stat_statements=preload)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def postgres_with_statements() -> Iterator[PrivatePostgres]:
    """A cluster with pg_stat_statements preloaded and created in the `postgres` database."""
    for server in _cluster(preload=True):
        server.sql("CREATE EXTENSION pg_stat_statements")
        yield server


@pytest.fixture
def postgres_plain() -> Iterator[PrivatePostgres]:
    """A cluster without pg_stat_statements, private to one test (which may stop and restart it)."""
    yield from _cluster(preload=False)
