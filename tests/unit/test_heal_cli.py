"""`cachewarden heal ACTION --target T [--dry-run]`: the same code path as /heal, with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from tests.support.healing import an_hour_ago, make_app_dir, write_compiled


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    root = make_app_dir(tmp_path / "shop")
    compiled = write_compiled(root, str(root / "resources/views/gone.blade.php"), mtime=an_hour_ago())
    config = tmp_path / "cachewarden.yaml"
    config.write_text(yaml.safe_dump({"laravel": [{"name": "shop", "root": str(root)}]}))
    return config, compiled


def test_dry_run_lists_and_exits_0_without_deleting(setup: tuple[Path, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config, compiled = setup

    code = main(["heal", "views.remove_orphans", "--target", "shop", "--dry-run", "--format", "json",
                 "--config.file", str(config)])

    run = json.loads(capsys.readouterr().out)
    assert code == 0
    assert run["result"] == "dry_run"
    assert run["step_results"][0]["done"] == [f"would delete {compiled}"]
    assert compiled.exists()


def test_run_deletes_verifies_and_exits_0(setup: tuple[Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config, compiled = setup

    code = main(["heal", "views.remove_orphans", "--target", "shop", "--config.file", str(config)])

    assert code == 0
    assert "verified" in capsys.readouterr().out
    assert not compiled.exists()


def test_recompile_without_php_fails_with_exit_1(setup: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = setup
    (tmp_path / "shop/resources/views/new.blade.php").write_text("hi")

    code = main(["heal", "views.recompile", "--target", "shop", "--config.file", str(config)])

    assert code == 1
    assert "no PHP to compile views" in capsys.readouterr().out


def test_dry_run_that_cannot_plan_its_step_fails_with_exit_1(setup: tuple[Path, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = setup
    (tmp_path / "shop/resources/views/new.blade.php").write_text("hi")

    code = main(["heal", "views.recompile", "--target", "shop", "--dry-run", "--format", "json",
                 "--config.file", str(config)])

    run = json.loads(capsys.readouterr().out)
    assert code == 1
    assert run["result"] == "failed"
    assert "no PHP to compile views" in run["step_results"][0]["error"]


@pytest.mark.parametrize(("action", "target"), [("views.nope", "shop"), ("views.recompile", "../shop")])
def test_unknown_action_or_target_exits_2(setup: tuple[Path, Path], action: str, target: str) -> None:
    config, compiled = setup

    assert main(["heal", action, "--target", target, "--config.file", str(config)]) == 2
    assert compiled.exists()


@pytest.mark.parametrize("key", ["token_file", "redis_password_file"])
def test_a_missing_secret_file_is_a_config_error_exit_2(tmp_path: Path, key: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cachewarden.yaml"
    config.write_text(yaml.safe_dump({"heal": {key: str(tmp_path / "nope")}}))

    assert main(["serve", "--config.file", str(config)]) == 2
    assert f"heal.{key}: file does not exist" in capsys.readouterr().err


def test_a_short_heal_token_refuses_to_serve_with_exit_2(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("short-token\n")
    token.chmod(0o600)
    config = tmp_path / "cachewarden.yaml"
    config.write_text(yaml.safe_dump({"heal": {"token_file": str(token)}}))

    assert main(["serve", "--config.file", str(config)]) == 2
    err = capsys.readouterr().err
    assert "at least 16 characters" in err
    assert "short-token" not in err


def test_without_an_action_every_plan_the_target_needs_runs_and_exits_0_when_all_are_verified(
        setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, compiled = setup

    code = main(["heal", "--target", "shop", "--config.file", str(config)])

    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-1] == "shop: verified"
    assert "heal views.remove_orphans on shop: verified" in out
    assert not compiled.exists()
    assert main(["heal", "--target", "shop", "--config.file", str(config)]) == 0
    assert capsys.readouterr().out == "shop: already_healthy\n"


@pytest.mark.parametrize(("action", "cache"), [("views.remove_orphans", "routes"),
                                               ("laravel.cache_rebuild", "route")])
def test_a_cache_the_action_does_not_take_or_allow_exits_2_and_runs_nothing(
        setup: tuple[Path, Path], action: str, cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    config, compiled = setup

    code = main(["heal", action, "--target", "shop", "--cache", cache, "--config.file", str(config)])

    assert code == 2
    assert "cache" in capsys.readouterr().err
    assert compiled.exists()


def test_a_cache_without_an_action_exits_2_and_heals_nothing(setup: tuple[Path, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config, compiled = setup

    code = main(["heal", "--target", "shop", "--cache", "routes", "--config.file", str(config)])

    assert code == 2
    assert "cache is an argument of an action: name the action" in capsys.readouterr().err
    assert compiled.exists()
