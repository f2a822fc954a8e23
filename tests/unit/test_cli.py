"""The `cachewarden` command: exit codes, output formats, and `serve` as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from exporter import __version__, collectors
from exporter.cli import EXIT_BAD_CONFIG, EXIT_OK, EXIT_PROBLEMS, main
from exporter.collectors.base import Check, Collector
from exporter.config import Config
from tests.support.fakes import FakeCollector
from tests.support.wait import free_port, wait_for


def write_config(tmp_path: Path, text: str = "{}\n") -> Path:
    path = tmp_path / "cachewarden.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def laravel_app(root: Path, views: dict[str, str], compiled: dict[str, str]) -> Path:
    """A Laravel-shaped app with the given Blade sources and compiled files (footer names the source)."""
    (root / "resources" / "views").mkdir(parents=True)
    (root / "storage" / "framework" / "views").mkdir(parents=True)
    for name, body in views.items():
        (root / "resources" / "views" / name).write_text(body, encoding="utf-8")
    for name, source in compiled.items():
        source_path = root / "resources" / "views" / source
        (root / "storage" / "framework" / "views" / name).write_text(
            f"<?php echo 'hi'; ?>\n<?php /**PATH {source_path} ENDPATH**/ ?>", encoding="utf-8")
    return root


def use_collectors(monkeypatch: pytest.MonkeyPatch, *fakes: Collector) -> None:
    def build(config: Config, enabled: dict[str, bool] | None = None) -> Sequence[Collector]:
        return list(fakes)
    monkeypatch.setattr(collectors, "build_collectors", build)


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"cachewarden {__version__}\n"


def test_bad_configuration_exits_2_with_every_problem_on_stderr(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"laravel:\n  - name: shop\n    root: {tmp_path}/missing\nbogus: 1\n")

    code = main(["check", "--config.file", str(config)])

    out, err = capsys.readouterr()
    assert code == EXIT_BAD_CONFIG
    assert out == ""
    assert f"{config}: invalid configuration:" in err
    assert f"laravel[0].root: directory {tmp_path / 'missing'} does not exist" in err
    assert "bogus: unknown key" in err


@pytest.mark.parametrize("command", ["serve", "check", "heal", "render"])
def test_a_configuration_file_that_is_not_utf8_exits_2_naming_file_and_offset(
        tmp_path: Path, command: str) -> None:
    config = tmp_path / "cachewarden.yaml"
    config.write_bytes(b"laravel: []\n# r\xe9sum\xe9\n")
    extra = {"heal": ["views.recompile", "--target", "shop"]}.get(command, [])
    # A child process with stdout and stderr strictly ASCII, as under a C locale.
    result = subprocess.run(
        [sys.executable, "-m", "exporter", command, "--config.file", str(config), *extra],
        capture_output=True, timeout=30, check=False, env={**os.environ, "PYTHONIOENCODING": "ascii:strict"})
    assert result.returncode == EXIT_BAD_CONFIG
    assert result.stderr.decode() == (f"{config}: invalid configuration:\n"
                                      "  byte offset 15: not UTF-8 (byte 0xe9); save the file as UTF-8\n")
    assert result.stdout == b""


def test_missing_configuration_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config.file", str(tmp_path / "none.yaml")]) == EXIT_BAD_CONFIG
    assert "cannot read the file" in capsys.readouterr().err


@pytest.mark.parametrize("address", ["nowhere", "127.0.0.1:70000"])
def test_malformed_listen_address_flag_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               address: str) -> None:
    code = main(["serve", "--config.file", str(write_config(tmp_path)), "--web.listen-address", address])
    assert code == EXIT_BAD_CONFIG
    assert capsys.readouterr().err == (
        f"--web.listen-address: expected HOST:PORT with a port from 1 to 65535, got {address!r}\n")


def test_malformed_listen_address_in_the_configuration_is_blamed_on_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "listen_address: 0.0.0.0:99999\n")
    assert main(["serve", "--config.file", str(config)]) == EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert "listen_address: expected HOST:PORT with a port from 1 to 65535, got '0.0.0.0:99999'" in err
    assert "--web.listen-address" not in err


def test_serve_on_an_address_in_use_exits_2_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "serve", "--config.file", str(write_config(tmp_path)),
             "--web.listen-address", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == EXIT_BAD_CONFIG
    assert f"cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_check_without_targets_is_healthy(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CACHEWARDEN_HEAL_TOKEN", raising=False)
    assert main(["check", "--config.file", str(write_config(tmp_path))]) == EXIT_OK
    assert capsys.readouterr().out == (
        "heal: disabled: no token: set heal.token_file or the variable CACHEWARDEN_HEAL_TOKEN\n"
        "cachewarden: healthy\n")


def test_check_exits_1_when_a_check_finds_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    stale = Check.from_items("stale views", ["/srv/a.php"], "none", "{n} stale view(s)")
    use_collectors(monkeypatch, FakeCollector("ok"), FakeCollector("shop", checks=[stale]))

    code = main(["check", "--config.file", str(write_config(tmp_path))])

    out = capsys.readouterr().out
    assert code == EXIT_PROBLEMS
    assert "  FAIL stale views: 1 stale view(s)\n         /srv/a.php\n" in out
    assert out.endswith("cachewarden: 1 problem(s) found\n")


def test_check_exits_1_when_a_collector_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    broken = FakeCollector("db")
    broken.error = ConnectionRefusedError()
    use_collectors(monkeypatch, broken)

    assert main(["check", "--config.file", str(write_config(tmp_path))]) == EXIT_PROBLEMS
    assert "fake/db: collection failing" in capsys.readouterr().out
    assert broken.closed, "check closes the collectors it opened"


def test_check_json_is_valid_json_with_every_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    broken = FakeCollector("db")
    broken.error = OSError()
    use_collectors(monkeypatch, FakeCollector("shop"), broken)

    code = main(["check", "--config.file", str(write_config(tmp_path)), "--format", "json"])

    report = json.loads(capsys.readouterr().out)
    assert code == EXIT_PROBLEMS
    assert report["healthy"] is False
    assert [(t["target"], t["up"], t["error"]) for t in report["targets"]] == [
        ("db", False, "OSError"), ("shop", True, None)]


def test_check_json_lists_every_offending_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    paths = [f"/srv/views/{i:03}.php" for i in range(120)]
    use_collectors(monkeypatch, FakeCollector("shop", checks=[
        Check.from_items("orphaned views", paths, "none", "{n} orphaned")]))

    main(["check", "--config.file", str(write_config(tmp_path)), "--format", "json"])

    (target,) = json.loads(capsys.readouterr().out)["targets"]
    assert target["checks"][0]["items"] == paths


def test_check_against_a_real_laravel_app_with_an_orphaned_view(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = laravel_app(tmp_path / "shop", {"welcome.blade.php": "hi"},
                       {"aaaa.php": "welcome.blade.php", "bbbb.php": "deleted.blade.php"})
    compiled = root / "storage" / "framework" / "views" / "aaaa.php"
    os.utime(compiled, (time.time() + 60, time.time() + 60))  # compiled after its source: not stale
    config = write_config(tmp_path, f"laravel:\n  - name: shop\n    root: {root}\n")

    code = main(["check", "--config.file", str(config), "--format", "json"])

    report = json.loads(capsys.readouterr().out)
    assert code == EXIT_PROBLEMS
    by_collector = {t["collector"]: t for t in report["targets"]}
    assert set(by_collector) == {"discovery", "views", "laravel_caches"}
    discovery, views = by_collector["discovery"], by_collector["views"]
    assert [(d["collector"], d["outcome"]) for d in discovery["derived"]] == [("views", "derived")]
    compiled = discovery["derived"][0]["settings"]["compiled_path"]
    assert compiled == str(root / "storage" / "framework" / "views")
    assert (views["collector"], views["target"], views["up"]) == ("views", "shop", True)
    failing = {c["name"]: c["items"] for c in views["checks"] if c["verdict"] == "problem"}
    assert list(failing) == ["orphaned views"]
    assert failing["orphaned views"] == [str(root / "storage" / "framework" / "views" / "bbbb.php")]


def test_disabling_a_collector_from_the_command_line_skips_its_targets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CACHEWARDEN_HEAL_TOKEN", raising=False)
    root = laravel_app(tmp_path / "shop", {}, {"bbbb.php": "deleted.blade.php"})
    config = write_config(tmp_path, f"laravel:\n  - name: shop\n    root: {root}\n")

    assert main(["check", "--config.file", str(config), "--no-collector.views",
                 "--no-collector.laravel_caches"]) == EXIT_OK
    assert capsys.readouterr().out == (
        "heal: disabled: no token: set heal.token_file or the variable CACHEWARDEN_HEAL_TOKEN\n"
        "cachewarden: healthy\n")


def test_serve_answers_healthz_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, "log_level: info\n")
    log = (tmp_path / "serve.log").open("w+", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config.file", str(config),
         "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        def healthy() -> bool:
            assert proc.poll() is None, "serve exited early"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return bool(json.load(resp)["status"] == "ok")

        wait_for(healthy, timeout=20, message="cachewarden serve answering /healthz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            assert b"cachewarden_build_info" in resp.read()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.seek(0)
        output = log.read()
        log.close()
    assert f"listening on 127.0.0.1:{port}" in output
    assert "Traceback" not in output


def test_check_exits_1_naming_the_env_line_when_laravel_could_not_read_its_env(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = laravel_app(tmp_path / "shop", {}, {})
    (root / ".env").write_text("APP_ENV=production\nAPP_NAME=My Shop\nREDIS_HOST=127.0.0.1\n")
    config = write_config(tmp_path, f"laravel:\n  - name: shop\n    root: {root}\n")

    assert main(["check", "--config.file", str(config), "--no-collector.views"]) == EXIT_PROBLEMS
    out = capsys.readouterr().out
    assert f"  FAIL .env: {root / '.env'}, line 2: Failed to parse dotenv file. Encountered unexpected" in out
    assert "  FAIL redis target: not derivable: " in out
    assert "  FAIL sql target: not derivable: " in out


def test_check_json_shows_the_derived_configuration_with_the_passwords_redacted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = laravel_app(tmp_path / "shop", {}, {})
    (root / ".env").write_text("REDIS_HOST=127.0.0.1\nREDIS_PORT=1\nREDIS_USERNAME=app\n"
                               "REDIS_PASSWORD='redis secret 41'\n")
    config = write_config(tmp_path, f"laravel:\n  - name: shop\n    root: {root}\n")

    main(["check", "--config.file", str(config), "--format", "json", "--no-collector.views"])
    out = capsys.readouterr().out
    discovery = next(t for t in json.loads(out)["targets"] if t["collector"] == "discovery")
    [redis] = discovery["derived"]
    assert (redis["target"], redis["source"]) == ("shop", str(root / ".env"))
    assert redis["settings"]["username"] == "app"
    assert redis["settings"]["password"] == "<redacted>"
    assert "redis secret 41" not in out
