"""Real PHP-FPM configuration layouts, written under a temporary root: Debian's installed files and the
official PHP Docker image's `/usr/local/etc` (text `{root}` stands for the root)."""

from __future__ import annotations

from pathlib import Path

import pytest

DEBIAN = Path("/etc/php/8.2/fpm")
# The official image writes these two next to the upstream www.conf (docker-library/php Dockerfiles).
DOCKER_CONF = """[global]
error_log = /proc/self/fd/2

; https://github.com/docker-library/php/pull/725#issuecomment-443540114
log_limit = 8192

[www]
; php-fpm closes STDOUT on startup, so sending logs to /proc/self/fd/1 does not work.
; https://bugs.php.net/bug.php?id=73886
access.log = /proc/self/fd/2

clear_env = no

; Ensure worker stdout and stderr are sent to the main error log.
catch_workers_output = yes
decorate_workers_output = no
"""
ZZ_DOCKER_CONF = """[global]
daemonize = no

[www]
listen = 9000
"""
def debian_files() -> dict[str, str]:
    """Debian's installed php-fpm.conf and www.conf, moved under the root."""
    if not (DEBIAN / "php-fpm.conf").exists():
        pytest.skip("php8.2-fpm's /etc/php/8.2/fpm is not installed")

    def moved(text: str) -> str:
        return text.replace("/etc/php/8.2/fpm", "{root}/etc/php/8.2/fpm").replace("/var/log", "{root}")

    return {
        "etc/php/8.2/fpm/php-fpm.conf": moved((DEBIAN / "php-fpm.conf").read_text()),
        "etc/php/8.2/fpm/pool.d/www.conf": moved((DEBIAN / "pool.d" / "www.conf").read_text()),
    }


def docker_files(zz: str = ZZ_DOCKER_CONF) -> dict[str, str]:
    """/usr/local/etc as in the official image: upstream php-fpm.conf and www.conf (Debian's copies of
    the same upstream files, with the include made relative as upstream has it), docker.conf and
    zz-docker.conf."""
    debian = debian_files()
    main = debian["etc/php/8.2/fpm/php-fpm.conf"].replace(
        "include={root}/etc/php/8.2/fpm/pool.d/*.conf", "include=etc/php-fpm.d/*.conf"
    ).replace("{root}/php8.2-fpm.log", "log/php-fpm.log")
    assert "include=etc/php-fpm.d/*.conf" in main
    return {
        "etc/php-fpm.conf": main,
        "etc/php-fpm.d/www.conf": debian["etc/php/8.2/fpm/pool.d/www.conf"],
        "etc/php-fpm.d/docker.conf": DOCKER_CONF,
        "etc/php-fpm.d/zz-docker.conf": zz,
        "log/.keep": "",
    }
