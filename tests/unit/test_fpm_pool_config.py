"""Reading FPM's configuration by FPM's rules: sections, includes against the prefix, `${NAME}`,
php_value precedence. The same layouts are checked against `php-fpm8.2 -tt` in
tests/integration/test_fpm_config_oracle.py; these tests pin each rule on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.php.pool_config import PoolConfigError, default_prefix, fpm_integer, read_config, read_pool

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


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_sections_and_max_children(tmp_path: Path) -> None:
    write(tmp_path, {"www.conf": POOL})
    config = read_config(tmp_path / "www.conf")
    assert sorted(p.name for p in config) == ["api", "www"]
    assert config.pool("www").max_children == 12
    assert config.pool("API").max_children == 4  # FPM matches pool names case-insensitively


def test_php_admin_value_beats_php_value_whatever_the_order(tmp_path: Path) -> None:
    write(tmp_path, {"p.conf": POOL})
    www = read_pool(tmp_path / "p.conf", "www")
    override = www.ini["opcache.validate_timestamps"]
    assert (override.value.literal, override.admin, override.file) == ("0", True, str(tmp_path / "p.conf"))
    assert www.ini["memory_limit"].value.literal == "256M"


def test_the_first_php_value_of_a_pool_wins_but_the_last_scalar_does(tmp_path: Path) -> None:
    # FPM prepends each php_value line to a list and applies the list in order: the first one is
    # applied last. Scalars are simply replaced.
    write(tmp_path, {
        "etc/php-fpm.conf": "[global]\ninclude=etc/pool.d/*.conf\n",
        "etc/pool.d/a.conf": "[www]\npm.max_children = 3\nphp_value[memory_limit] = 100M\n",
        "etc/pool.d/b.conf": "[www]\npm.max_children = 7\nphp_value[memory_limit] = 200M\n"
                             "php_flag[display_errors] = on\n",
    })
    www = read_pool(tmp_path / "etc/php-fpm.conf", "www")
    assert www.max_children == 7
    assert www.ini["memory_limit"].value.literal == "100M"
    assert www.ini["memory_limit"].file == str(tmp_path / "etc/pool.d/a.conf")
    assert www.ini["display_errors"].value.literal == "1"


def test_official_docker_image_layout_resolves_include_against_the_prefix(tmp_path: Path) -> None:
    # /usr/local/etc/php-fpm.conf with include=etc/php-fpm.d/*.conf: relative to the prefix
    # (/usr/local), not to the including file's folder (/usr/local/etc). Read against the folder,
    # this layout once gave "no [www] pool section".
    write(tmp_path, {
        "etc/php-fpm.conf": "[global]\ninclude=etc/php-fpm.d/*.conf\n",
        "etc/php-fpm.d/www.conf": "[www]\nuser = www-data\nlisten = 127.0.0.1:9000\npm = dynamic\n"
                                  "pm.max_children = 5\n",
        "etc/php-fpm.d/docker.conf": "[global]\nerror_log = /proc/self/fd/2\n[www]\nclear_env = no\n",
        "etc/php-fpm.d/zz-docker.conf": "[global]\ndaemonize = no\n[www]\nlisten = 9000\n",
    })
    assert default_prefix(tmp_path / "etc/php-fpm.conf") == tmp_path
    www = read_pool(tmp_path / "etc/php-fpm.conf", "www")
    assert www.max_children == 5
    assert www.directives["listen"].value.literal == "9000"
    assert www.directives["listen"].file == str(tmp_path / "etc/php-fpm.d/zz-docker.conf")


def test_a_relative_include_without_a_known_prefix_is_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path, {"fpm/php-fpm.conf": "[global]\ninclude=pool.d/*.conf\n"})
    relative = r"php-fpm.conf:2: include=pool.d/\*.conf is relative.*fpm_prefix"
    with pytest.raises(PoolConfigError, match=relative):
        read_config(tmp_path / "fpm/php-fpm.conf")
    write(tmp_path, {"fpm/pool.d/www.conf": "[www]\npm.max_children = 2\n"})
    assert read_pool(tmp_path / "fpm/php-fpm.conf", "www", prefix=tmp_path / "fpm").max_children == 2


def test_the_section_carries_across_an_include(tmp_path: Path) -> None:
    write(tmp_path, {
        "main.conf": f"[www]\ninclude={tmp_path}/extra.conf\npm.max_children = 9\n",
        "extra.conf": "pm = static\n[other]\npm.max_children = 1\n",
    })
    config = read_config(tmp_path / "main.conf")
    assert config.pool("www").directives["pm"].value.literal == "static"
    # After the include FPM is still in the section the included file ended in.
    assert config.pool("other").max_children == 9
    assert config.pool("www").max_children is None


def test_an_include_that_matches_nothing_is_noted_not_fatal(tmp_path: Path) -> None:
    write(tmp_path, {"main.conf": f"include={tmp_path}/none/*.conf\n[www]\npm.max_children = 2\n",
                     "none/notes.txt": ""})
    config = read_config(tmp_path / "main.conf")
    assert config.pool("www").max_children == 2
    assert config.notes == (f"{tmp_path / 'main.conf'}:1: include={tmp_path}/none/*.conf matches no file",)


def test_includes_nested_deeper_than_fpm_allows_are_refused(tmp_path: Path) -> None:
    for i in range(7):
        (tmp_path / f"{i}.conf").write_text(f"include={tmp_path}/{i + 1}.conf\n")
    (tmp_path / "7.conf").write_text("[www]\npm.max_children = 1\n")
    with pytest.raises(PoolConfigError, match="more than 5 files in a chain"):
        read_config(tmp_path / "0.conf")


def test_env_values_are_templates_with_their_source(tmp_path: Path) -> None:
    write(tmp_path, {"www.conf": "[www]\npm.max_children = ${FPM_MAX_CHILDREN}\n"
                                 "php_admin_value[opcache.validate_timestamps] = \"${VT}\"\n"})
    www = read_pool(tmp_path / "www.conf", "www")
    assert www.max_children is None
    directive = www.max_children_directive
    assert directive is not None
    assert directive.value.variables == ("FPM_MAX_CHILDREN",)
    assert directive.value.expand({"FPM_MAX_CHILDREN": "17"}) == "17"
    assert directive.source() == f"{tmp_path / 'www.conf'} (${{FPM_MAX_CHILDREN}})"
    assert www.ini["opcache.validate_timestamps"].source() == f"{tmp_path / 'www.conf'} (${{VT}})"


def test_where_a_worker_sees_the_masters_variable(tmp_path: Path) -> None:
    write(tmp_path, {"p.conf": "[cleared]\n"
                               "[copied]\nenv[MAXC] = $MAXC\nenv[OTHER] = ${VT}\n"
                               "[inherited]\nclear_env = no\n"
                               "[overridden]\nclear_env = no\nenv[MAXC] = 3\n"
                               "[first-wins]\nenv[MAXC] = $MAXC\nenv[MAXC] = 3\n"})
    config = read_config(tmp_path / "p.conf")
    assert config.pool("cleared").env_source("MAXC") is None
    assert config.pool("copied").env_source("MAXC") == "MAXC"
    assert config.pool("copied").env_source("VT") == "OTHER"
    assert config.pool("inherited").env_source("MAXC") == "MAXC"
    assert config.pool("overridden").env_source("MAXC") is None
    assert config.pool("first-wins").env_source("MAXC") == "MAXC"  # FPM applies env[] lines in reverse


def test_pool_name_token_is_expanded_in_values(tmp_path: Path) -> None:
    write(tmp_path, {"p.conf": "[shop]\nlisten = /run/php/$pool.sock\n"
                               "php_value[error_log] = /var/log/$pool.log\n"})
    shop = read_pool(tmp_path / "p.conf", "shop")
    assert shop.directives["listen"].value.literal == "/run/php/shop.sock"
    assert shop.ini["error_log"].value.literal == "/var/log/shop.log"


@pytest.mark.parametrize(("text", "number"), [("5", 5), ("-1", -1), ("", 0), ("5 ", None), ("0x5", None),
                                              ("²", None), (None, None)])
def test_integers_follow_fpm(text: str | None, number: int | None) -> None:
    assert fpm_integer(text) == number


def test_missing_pool_or_file_is_a_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text(POOL)
    with pytest.raises(PoolConfigError, match=r"no \[other\] pool section"):
        read_pool(conf, "other")
    with pytest.raises(PoolConfigError, match="cannot read"):
        read_pool(tmp_path / "absent.conf", "www")
