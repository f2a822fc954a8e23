"""What the heal's child processes inherit: the environment without secrets, and the account to run as."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from exporter.config import parse
from exporter.fs.access import UserGroup
from exporter.heal import child_process
from exporter.heal.child_process import AccountError, environment, spawn_options


def test_the_variables_secrets_are_read_from_are_left_out(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    for name in ("CW_T_TOKEN", "CW_T_HEAL_REDIS", "CW_T_REDIS", "CW_T_DB", "CW_T_PLAIN"):
        monkeypatch.setenv(name, "value")
    config = parse({
        "redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0", "password_env": "CW_T_REDIS"}],
        "databases": [{"name": "db", "url": "mysql://app@127.0.0.1/app", "password_env": "CW_T_DB"}],
        "heal": {"token_env": "CW_T_TOKEN", "redis_password_env": "CW_T_HEAL_REDIS"},
    })

    env = environment(config)

    assert {"CW_T_TOKEN", "CW_T_HEAL_REDIS", "CW_T_REDIS", "CW_T_DB"}.isdisjoint(env)
    assert env["CW_T_PLAIN"] == "value"
    assert env["PATH"] == os.environ["PATH"]


def test_running_as_oneself_needs_no_switch() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name

    assert set(spawn_options(parse({}), UserGroup.parse(me))) == {"env"}


def test_only_root_may_run_a_command_as_another_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child_process.os, "geteuid", lambda: 4242)

    with pytest.raises(AccountError, match="only root may switch users, cachewarden runs as uid 4242"):
        spawn_options(parse({}), UserGroup.parse("nobody"))


def test_an_account_given_by_numeric_ids_runs_as_those_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child_process.os, "geteuid", lambda: 0)
    options = spawn_options(parse({}), UserGroup.parse("33:33"))
    assert (options["user"], options["group"], options["env"]["USER"]) == (33, 33, "www-data")
    nameless = spawn_options(parse({}), UserGroup.parse("4000000:4000000"))
    assert (nameless["user"], nameless["group"], nameless["env"]["HOME"]) == (4000000, 4000000, "/")


CHILD_LIMIT = """
import asyncio, resource
from exporter import descriptors
from exporter.config import Config
from exporter.heal.child_process import spawn_options

old, new = descriptors.raise_soft_limit()

async def main():
    proc = await asyncio.create_subprocess_exec("sh", "-c", "ulimit -Sn", stdout=-1,
                                                **spawn_options(Config()))
    out, _ = await proc.communicate()
    print(old, new, resource.getrlimit(resource.RLIMIT_NOFILE)[0], out.decode().strip())

asyncio.run(main())
"""


def test_a_child_gets_the_descriptor_limit_cachewarden_was_started_with() -> None:
    # serve raises its own soft limit to the hard one; PHP or an artisan command may use select(),
    # which breaks past 1024 descriptors, so children start with the original.
    import resource
    import subprocess
    import sys

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 2048))

    out = subprocess.run([sys.executable, "-c", CHILD_LIMIT], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2], preexec_fn=low, timeout=60).stdout
    assert out.split() == ["64", "2048", "2048", "64"]


def test_without_a_raised_limit_a_child_needs_no_preexec(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter import descriptors

    monkeypatch.setattr(descriptors, "_original", None)
    assert "preexec_fn" not in spawn_options(parse({}))
    monkeypatch.setattr(descriptors, "_original", (64, 2048))
    assert spawn_options(parse({}))["preexec_fn"] is descriptors.restore_for_child
