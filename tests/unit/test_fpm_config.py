"""Configuration of php_fpm targets: the agent directory must never be web-served."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, parse


def laravel_app(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    for d in ("public", "resources/views", "storage/framework/views"):
        (root / d).mkdir(parents=True)
    (root / "artisan").write_text("<?php\n")
    return root


def test_agent_dir_inside_a_configured_apps_public_dir_is_refused(tmp_path: Path) -> None:
    root = laravel_app(tmp_path)
    (root / "artisan").unlink()  # only the configured root tells us it is a Laravel app
    with pytest.raises(ConfigError) as err:
        parse({"laravel": [{"name": "shop", "root": str(root)}],
               "php_fpm": [{"name": "www", "address": "127.0.0.1:9000",
                            "agent_dir": str(root / "public" / "cw")}]})
    assert any(p.startswith("php_fpm[0].agent_dir: inside") for p in err.value.problems)


def test_agent_dir_in_public_next_to_artisan_is_refused_without_laravel_config(tmp_path: Path) -> None:
    root = laravel_app(tmp_path)
    with pytest.raises(ConfigError, match=r"php_fpm\[0\]\.agent_dir: inside the public/ directory"):
        parse({"php_fpm": [{"name": "www", "address": "127.0.0.1:9000", "agent_dir": str(root / "public")}]})


def test_unknown_laravel_reference_is_refused_and_a_safe_dir_accepted(tmp_path: Path) -> None:
    root = laravel_app(tmp_path)
    with pytest.raises(ConfigError, match=r"php_fpm\[0\]\.laravel: no Laravel target named 'blog'"):
        parse({"php_fpm": [{"name": "www", "address": "127.0.0.1:9000", "laravel": "blog"}]})
    cfg = parse({"laravel": [{"name": "shop", "root": str(root)}],
                 "php_fpm": [{"name": "www", "address": "unix:/run/php.sock", "laravel": "shop",
                              "agent_dir": str(tmp_path / "agent"), "status_timeout": "500ms"}]})
    assert cfg.php_fpm[0].status_timeout == 0.5


def fpm_target(agent_dir: Path, **extra: object) -> dict[str, object]:
    return {"name": "www", "address": "127.0.0.1:9000", "agent_dir": str(agent_dir), **extra}


def test_agent_dir_under_storage_app_public_is_refused(tmp_path: Path) -> None:
    root = laravel_app(tmp_path)
    storage_public = root / "storage" / "app" / "public"
    storage_public.mkdir(parents=True)
    (root / "public" / "storage").symlink_to(storage_public)  # what `artisan storage:link` does
    with pytest.raises(ConfigError, match=r"php_fpm\[0\]\.agent_dir: inside storage/app/public"):
        parse({"php_fpm": [fpm_target(storage_public / "cw")]})
    (root / "artisan").unlink()
    with pytest.raises(ConfigError, match=rf"php_fpm\[0\]\.agent_dir: inside {storage_public}, served"):
        parse({"laravel": [{"name": "shop", "root": str(root)}],
               "php_fpm": [fpm_target(storage_public / "cw")]})


def test_a_symlink_into_public_does_not_hide_it(tmp_path: Path) -> None:
    root = laravel_app(tmp_path)
    (root / "artisan").unlink()
    alias = tmp_path / "innocent"
    alias.symlink_to(root / "public")
    with pytest.raises(ConfigError, match=r"php_fpm\[0\]\.agent_dir: inside .*/shop/public, served"):
        parse({"laravel": [{"name": "shop", "root": str(root)}], "php_fpm": [fpm_target(alias / "cw")]})


def test_where_a_symlink_in_public_points_is_served_too(tmp_path: Path) -> None:
    root = laravel_app(tmp_path)
    assets = tmp_path / "shared-assets"
    assets.mkdir()
    (root / "public" / "assets").symlink_to(assets)
    with pytest.raises(ConfigError, match=rf"php_fpm\[0\]\.agent_dir: inside {assets}, served"):
        parse({"laravel": [{"name": "shop", "root": str(root)}], "php_fpm": [fpm_target(assets / "cw")]})
    cfg = parse({"laravel": [{"name": "shop", "root": str(root)}], "php_fpm": [fpm_target(tmp_path / "cw")]})
    assert cfg.php_fpm[0].agent_dir == tmp_path / "cw"


def test_the_fpm_collector_timeout_must_leave_room_for_connect_and_status(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"php_fpm\[0\]\.status_timeout: connect_timeout \+ status_timeout "
                                          r"\(5s\) must be below collectors\.fpm\.timeout \(5s\)"):
        parse({"php_fpm": [fpm_target(tmp_path, status_timeout="4s")]})
    cfg = parse({"php_fpm": [fpm_target(tmp_path, status_timeout="4s")],
                 "collectors": {"fpm": {"timeout": "6s"}}})
    assert cfg.php_fpm[0].status_timeout == 4
