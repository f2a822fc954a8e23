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
