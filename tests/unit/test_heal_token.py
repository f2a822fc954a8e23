"""The heal token judged at start: file modes as ssh judges key files, tokens that cannot work refused,
and the heal's state shown by `check` (text and JSON), the status page and GET /heal."""

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
from exporter.config import parse
from exporter.heal.token import HealState, HealTokenError, read_heal_state
from tests.support.healing import AUTH, TOKEN

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")


def write_token(path: Path, data: bytes, mode: int = 0o600, owner: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, -1)
    return path


def kubernetes_secret(volume: Path, token: bytes) -> Path:
    """A secret volume as the kubelet writes it: <name> -> ..data/<name>, ..data -> ..<timestamp>/."""
    write_token(volume / "..2026_11_30_10_00_00.123" / "heal-token", token, 0o644, owner=0)
    (volume / "..data").symlink_to("..2026_11_30_10_00_00.123")
    (volume / "heal-token").symlink_to("..data/heal-token")
    return volume / "heal-token"


def serve_exit(tmp_path: Path, token_file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "cachewarden.yaml"
    config.write_text(yaml.safe_dump({"heal": {"token_file": str(token_file)}}))
    # check, not serve: both judge the token before anything starts, and check returns at once
    code = main(["check", "--config.file", str(config)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("mode", "why"), [
    (0o644, "can be read by its group and others (mode 0644); chmod 600"),
    (0o640, "can be read by its group (mode 0640); chmod 600"),
    (0o604, "can be read by others (mode 0604); chmod 600"),
    (0o620, "can be written by its group (mode 0620), who could replace the secret; chmod go-w"),
])
def test_our_own_token_file_open_to_others_refuses_to_start_as_ssh_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int, why: str) -> None:
    token = write_token(tmp_path / "token", f"{TOKEN}\n".encode(), mode)
    code, err = serve_exit(tmp_path, token, capsys)
    assert code == EXIT_BAD_CONFIG
    assert f"heal.token_file: {token} " in err
    assert why in err
    assert TOKEN not in err


@as_root
def test_a_file_others_can_write_is_refused_whoever_owns_it(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    token = write_token(tmp_path / "token", f"{TOKEN}\n".encode(), 0o646, owner=NOBODY)
    code, err = serve_exit(tmp_path, token, capsys)
    assert code == EXIT_BAD_CONFIG
    assert "can be written by others (mode 0646)" in err


@as_root
def test_a_kubernetes_secret_readable_by_all_starts_with_a_loud_warning(tmp_path: Path) -> None:
    # The kubelet's files are root's; cachewarden runs as another user (here: we are root, so the
    # file goes to nobody to stand for "not ours").
    token = kubernetes_secret(tmp_path / "secret", f"{TOKEN}\n".encode())
    os.chown(token.resolve(), NOBODY, -1)

    state = read_heal_state(parse({"heal": {"token_file": str(token)}}).heal)

    assert state.enabled
    assert state.token == TOKEN
    assert state.token_source == f"file {token}"
    assert state.warnings == (
        f"heal.token_file: {token} can be read by every user on this host (mode 0644, owner uid {NOBODY}); "
        "make it 0400 or 0440 (Kubernetes: defaultMode 0440 and an fsGroup; Docker Swarm: mode 0400)",)


def test_a_file_only_we_can_read_through_a_symlink_has_no_warning(tmp_path: Path) -> None:
    token = kubernetes_secret(tmp_path / "secret", f"{TOKEN}\n".encode())
    token.resolve().chmod(0o400)
    state = read_heal_state(parse({"heal": {"token_file": str(token)}}).heal)
    assert (state.enabled, state.warnings) == (True, ())


@pytest.mark.parametrize(("data", "why"), [
    (b"", "is empty: write the token into it"),
    (b"\n", "is empty: write the token into it"),
    (b"   \r\n", "is empty: write the token into it"),
    (f"{TOKEN}\x00\n".encode(), "space or control character at offset 17"),
    (f"{TOKEN[:5]} {TOKEN[5:]}\n".encode(), "space or control character at offset 5"),
    (b"short\n", "must be at least 16 characters long"),
    (b"\xff" + TOKEN.encode(), "not UTF-8 at byte offset 0"),
])
def test_a_token_that_cannot_work_refuses_to_start_instead_of_disabling_heal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, why: str) -> None:
    token = write_token(tmp_path / "token", data)
    code, err = serve_exit(tmp_path, token, capsys)
    assert code == EXIT_BAD_CONFIG
    assert f"heal.token_file {token}" in err
    assert why in err


def test_a_crlf_token_file_is_read_without_its_line_end(tmp_path: Path) -> None:
    token = write_token(tmp_path / "token", f"{TOKEN}\r\n".encode())
    assert read_heal_state(parse({"heal": {"token_file": str(token)}}).heal).token == TOKEN


def test_an_empty_token_variable_is_refused_not_taken_for_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWARDEN_HEAL_TOKEN", "")
    with pytest.raises(HealTokenError, match="the variable CACHEWARDEN_HEAL_TOKEN is empty"):
        read_heal_state(parse({}).heal)


def test_check_shows_the_heal_state_in_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWARDEN_HEAL_TOKEN", TOKEN)
    config = tmp_path / "cachewarden.yaml"
    config.write_text("heal: {dry_run: true}\n")

    assert main(["check", "--config.file", str(config)]) == EXIT_OK
    text = capsys.readouterr().out
    assert main(["check", "--config.file", str(config), "--format", "json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)

    assert ("heal: enabled: dry run: every run only lists what it would do "
            "(token from environment variable CACHEWARDEN_HEAL_TOKEN)\n") in text
    assert report["heal"] == {"enabled": True, "reason": "dry run: every run only lists what it would do",
                              "token_source": "environment variable CACHEWARDEN_HEAL_TOKEN", "warnings": []}
    assert TOKEN not in text + json.dumps(report)


def test_check_says_why_heal_is_disabled(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWARDEN_HEAL_TOKEN", TOKEN)
    config = tmp_path / "cachewarden.yaml"
    config.write_text("heal: {enabled: false}\n")
    assert main(["check", "--config.file", str(config), "--format", "json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["heal"]["reason"] == "heal.enabled is false"


@as_root
async def test_status_page_and_heal_listing_show_state_and_warning(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    token = write_token(tmp_path / "token", f"{TOKEN}\n".encode(), 0o644, owner=NOBODY)
    client = await aiohttp_client(create_app(parse({"heal": {"token_file": str(token)}}),
                                             run_collectors=False))

    page = await (await client.get("/")).text()
    listing = await (await client.get("/heal", headers=AUTH)).json()

    assert "enabled: acts on firing alerts" in page
    assert f"token from file {token}" in page
    assert "can be read by every user on this host (mode 0644" in page
    assert listing["state"]["enabled"] is True
    assert listing["state"]["token_source"] == f"file {token}"
    assert listing["state"]["warnings"][0].startswith(f"heal.token_file: {token} can be read by every user")
    assert TOKEN not in page


def test_the_token_rules_hold_however_the_heal_state_is_built() -> None:
    # create_app takes a ready HealState: a short token must not get past it that way either.
    with pytest.raises(HealTokenError, match="at least 16 characters"):
        HealState(True, "acts on firing alerts", "environment variable X", token="short")
    with pytest.raises(HealTokenError, match="space or control character"):
        HealState(True, "acts on firing alerts", None, token="a token with spaces in it")
    assert HealState(True, "ok", None, token="x" * 16).token == "x" * 16
