"""Attributing each effective OPcache directive to the file that set it."""

from __future__ import annotations

from pathlib import Path

from exporter.php.ini import UNKNOWN_SOURCE, attribute, parse_ini_lines
from exporter.php.pool_config import read_pool


def test_ini_lines_skip_comments_and_sections_and_unquote() -> None:
    lines = ["; opcache.enable=0", "[opcache]", "opcache.enable = 1", 'opcache.restrict_api = "/srv"',
             "opcache.revalidate_freq=60 ; every minute", "# opcache.x=1"]
    parsed = {k: v.literal for k, v in parse_ini_lines(lines).items()}
    assert parsed == {"opcache.enable": "1", "opcache.restrict_api": "/srv", "opcache.revalidate_freq": "60",
                      "# opcache.x": "1"}  # `#` has not started a comment since PHP 7


def test_the_last_file_that_sets_a_directive_is_its_source() -> None:
    files = [
        ("/etc/php/8.2/fpm/php.ini", ["opcache.validate_timestamps=1"]),
        ("/etc/php/8.2/fpm/conf.d/10-opcache.ini", ["opcache.memory_consumption=256"]),
        ("/etc/php/8.2/fpm/conf.d/99-disable.ini", ["opcache.validate_timestamps=1"]),
        ("/etc/php/8.2/fpm/conf.d/99-opcache.ini", ["opcache.validate_timestamps=Off"]),
    ]
    effective = {"opcache.validate_timestamps": "", "opcache.memory_consumption": "256"}
    by = {s.directive: s for s in attribute(effective, files)}
    assert (by["validate_timestamps"].value, by["validate_timestamps"].source) == (
        "0", "/etc/php/8.2/fpm/conf.d/99-opcache.ini")
    assert by["memory_consumption"].source == "/etc/php/8.2/fpm/conf.d/10-opcache.ini"
    assert by["revalidate_freq"].source == "default"


def test_the_pool_beats_every_ini_file(tmp_path: Path) -> None:
    conf = tmp_path / "www.conf"
    conf.write_text("[www]\nphp_admin_value[opcache.validate_timestamps] = 0\n")
    pool = read_pool(conf, "www")
    files = [("/conf.d/99-opcache.ini", ["opcache.validate_timestamps=1"])]
    by = {s.directive: s for s in attribute({"opcache.validate_timestamps": "0"}, files, pool)}
    assert by["validate_timestamps"].source == str(conf)


def test_a_value_from_an_environment_variable_is_the_files_and_names_the_variable() -> None:
    # Official-image style: PHP expanded ${…} from FPM's environment at start; ini_get has the value.
    files = [("/usr/local/etc/php/conf.d/docker-php-ext-opcache.ini", ["opcache.validate_timestamps=1"]),
             ("/usr/local/etc/php/conf.d/zz-opcache.ini",
              ["opcache.validate_timestamps=${PHP_OPCACHE_VALIDATE_TIMESTAMPS}",
               'opcache.revalidate_freq="${FREQ}"'])]
    effective = {"opcache.validate_timestamps": "0", "opcache.revalidate_freq": "30"}
    by = {s.directive: s for s in attribute(effective, files)}
    assert (by["validate_timestamps"].value, by["validate_timestamps"].source) == (
        "0", "/usr/local/etc/php/conf.d/zz-opcache.ini (${PHP_OPCACHE_VALIDATE_TIMESTAMPS})")
    assert (by["revalidate_freq"].value, by["revalidate_freq"].source) == (
        "30", "/usr/local/etc/php/conf.d/zz-opcache.ini (${FREQ})")


def test_a_pool_value_from_an_environment_variable_names_it(tmp_path: Path) -> None:
    conf = tmp_path / "zz-docker.conf"
    conf.write_text("[www]\nphp_value[opcache.validate_timestamps] = ${VT}\n")
    files = [("/conf.d/10-opcache.ini", ["opcache.validate_timestamps=1"])]
    pool = read_pool(conf, "www")
    by = {s.directive: s for s in attribute({"opcache.validate_timestamps": ""}, files, pool)}
    assert (by["validate_timestamps"].value, by["validate_timestamps"].source) == ("0", f"{conf} (${{VT}})")


def test_a_value_no_known_file_sets_is_not_pinned_on_the_last_file() -> None:
    # The pool sets validate_timestamps=0 but pool_config is not configured: the 99- file says 1.
    files = [("/conf.d/10-opcache.ini", ["opcache.memory_consumption=256"]),
             ("/conf.d/99-opcache.ini", ["opcache.validate_timestamps=1"])]
    effective = {"opcache.validate_timestamps": "0", "opcache.memory_consumption": "256",
                 "opcache.revalidate_freq": "60", "opcache.enable": "1"}
    by = {s.directive: s for s in attribute(effective, files)}
    assert (by["validate_timestamps"].value, by["validate_timestamps"].source) == ("0", UNKNOWN_SOURCE)
    assert by["revalidate_freq"].source == UNKNOWN_SOURCE  # 60 is not PHP's default of 2
    assert by["memory_consumption"].source == "/conf.d/10-opcache.ini"
    assert by["enable"].source == "default"
