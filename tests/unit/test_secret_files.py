"""Every secret file (Redis and database passwords, the heal store's password) is judged as the token
file is: refused when ours and open to others or writable by them, a warning when another owner's
file is readable by all; the warning is shown by `check` and on the status page."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.cli import EXIT_BAD_CONFIG, EXIT_OK, main
from exporter.config import Config, parse
from exporter.secret_files import SecretFileError
from tests.support.config_fields import walk_fields

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
PASSWORD = "pw-Secret-8812"
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")

SECRET_KEYS = {
    "redis[0].password_file": lambda p: {"redis": [{"name": "c", "url": "redis://127.0.0.1:1/0",
                                                    "password_file": p}],
                                         "collectors": {"redis": {"enabled": False}}},
    "databases[0].password_file": lambda p: {"databases": [{"name": "d", "url": "mysql+asyncmy://u@h/d",
                                                            "password_file": p}],
                                             "collectors": {"sql": {"enabled": False}}},
    "heal.redis_password_file": lambda p: {"heal": {"redis_password_file": p}},
}


def write(path: Path, mode: int, owner: int | None = None) -> Path:
    path.write_text(PASSWORD + "\n")
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, -1)
    return path


def check(tmp_path: Path, data: dict[str, object], *flags: str) -> int:
    config = tmp_path / "cachewarden.yaml"
    config.write_text(yaml.safe_dump(data))
    return main(["check", "--config.file", str(config), *flags])


def test_every_secret_file_key_of_the_model_is_listed_and_so_judged(tmp_path: Path) -> None:
    """A password or token file key added to the model later must be in Config.secret_files."""
    secret_keys = {path.replace("[]", "[0]") for path, _ in walk_fields(Config)
                   if path.endswith("_file") and ("password" in path or "token" in path)}
    assert secret_keys == {"heal.token_file", *SECRET_KEYS}
    path = write(tmp_path / "pw", 0o600)
    for key, build in SECRET_KEYS.items():
        assert parse(build(str(path))).secret_files() == [(key, path)]
    assert parse({"heal": {"token_file": str(path)}}).secret_files() == [("heal.token_file", path)]


@pytest.mark.parametrize("key", sorted(SECRET_KEYS))
def test_a_password_file_of_ours_others_can_read_refuses_to_start(
        key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "pw", 0o644)
    assert check(tmp_path, SECRET_KEYS[key](str(path))) == EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert f"{key}: {path} belongs to the user cachewarden runs as and can be read by its group and " \
           f"others (mode 0644); chmod 600 {path}" in err
    assert PASSWORD not in err


@as_root
@pytest.mark.parametrize("key", sorted(SECRET_KEYS))
def test_another_owners_password_file_readable_by_all_is_a_warning_in_check(
        key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "pw", 0o644, owner=NOBODY)
    assert check(tmp_path, SECRET_KEYS[key](str(path)), "--format", "json") == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["warnings"] == [
        f"{key}: {path} can be read by every user on this host (mode 0644, owner uid {NOBODY}); make it "
        "0400 or 0440 (Kubernetes: defaultMode 0440 and an fsGroup; Docker Swarm: mode 0400)"]


@as_root
async def test_the_warning_is_on_the_status_page(tmp_path: Path, aiohttp_client: MakeClient) -> None:
    path = write(tmp_path / "pw", 0o644, owner=NOBODY)
    client = await aiohttp_client(create_app(parse(SECRET_KEYS["heal.redis_password_file"](str(path))),
                                             run_collectors=False))
    page = await (await client.get("/")).text()
    assert f"heal.redis_password_file: {path} can be read by every user on this host" in page
    assert PASSWORD not in page


def test_create_app_refuses_a_password_file_others_can_write(tmp_path: Path) -> None:
    path = write(tmp_path / "pw", 0o622)
    with pytest.raises(SecretFileError, match=r"can be written by its group and others \(mode 0622\)"):
        create_app(parse(SECRET_KEYS["redis[0].password_file"](str(path))), run_collectors=False)
