"""Reading FPM pool files: pm.max_children, php_value/php_admin_value, includes."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.php.pool_config import PoolConfigError, parse_pool_text, read_pool

POOL = """
; comment
[global]
error_log = /var/log/fpm.log

[www]
user = www-data
pm = dynamic
pm.max_children = 12   ; inline comment
php_admin_value[opcache.validate_timestamps] = 0
php_value[opcache.validate_timestamps] = 1
php_value[memory_limit] = "256M"

[api]
pm.max_children = 4
"""


def test_sections_and_max_children() -> None:
    pools = parse_pool_text(POOL, "/etc/php/8.2/fpm/pool.d/www.conf")
    assert sorted(pools) == ["api", "www"]
    assert pools["www"].max_children == 12
    assert pools["api"].max_children == 4


def test_php_admin_value_is_not_overridden_by_a_later_php_value() -> None:
    www = parse_pool_text(POOL, "/p.conf")["www"]
    override = www.ini["opcache.validate_timestamps"]
    assert (override.value, override.admin, override.file) == ("0", True, "/p.conf")
    assert www.ini["memory_limit"].value == "256M"


def test_include_globs_are_followed_in_order(tmp_path: Path) -> None:
    (tmp_path / "pool.d").mkdir()
    (tmp_path / "pool.d" / "a.conf").write_text("[www]\npm.max_children = 3\n")
    (tmp_path / "pool.d" / "b.conf").write_text("[www]\npm.max_children = 7\n")
    main = tmp_path / "php-fpm.conf"
    main.write_text("[global]\ninclude=pool.d/*.conf\n")
    assert read_pool(main, "www").max_children == 7


def test_missing_pool_or_file_is_a_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text(POOL)
    with pytest.raises(PoolConfigError, match=r"no \[other\] pool section"):
        read_pool(conf, "other")
    with pytest.raises(PoolConfigError, match="cannot read"):
        read_pool(tmp_path / "absent.conf", "www")
