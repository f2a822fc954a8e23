"""The unix socket PHP's pdo_mysql opens for `host=localhost`, as Laravel's MySQL connector leaves it to.

Laravel builds `mysql:host=localhost;port=…` when DB_SOCKET is empty, and pdo_mysql then ignores the
port and connects to `pdo_mysql.default_socket` (measured here with PHP 8.2: `host=localhost;port=3307`
reaches MariaDB's /run/mysqld/mysqld.sock while nothing listens on 3307). The match is exact: any other
spelling (`LOCALHOST`) reaches mysqlnd, which takes it case-insensitively as localhost and opens its
built-in `/tmp/mysql.sock`. An empty `pdo_mysql.default_socket=` line (Debian's php.ini has one) keeps
the compiled-in default, on Debian /var/run/mysqld/mysqld.sock, i.e. MariaDB's /run/mysqld/mysqld.sock.
PHP's ini files are read where Debian keeps them (FPM's first, the newest PHP first); a sidecar that
cannot read them assumes that default.
"""

from __future__ import annotations

import re
from pathlib import Path

from exporter.php.ini_scanner import Entry, scan_line

MARIADB_SOCKET = "/run/mysqld/mysqld.sock"
MYSQLND_SOCKET = "/tmp/mysql.sock"  # noqa: S108 - mysqlnd's built-in path, read, never written
PHP_ETC = Path("/etc/php")
_VERSION_DIR = re.compile(r"\d+(\.\d+)*")


def _ini_files(etc: Path) -> list[Path]:
    try:
        versions = sorted((d for d in etc.iterdir() if _VERSION_DIR.fullmatch(d.name)),
                          key=lambda d: tuple(int(p) for p in d.name.split(".")), reverse=True)
    except OSError:
        return []
    for version in versions:
        for sapi in ("fpm", "cli"):
            php_ini = version / sapi / "php.ini"
            if php_ini.is_file():
                try:
                    scanned = sorted((version / sapi / "conf.d").glob("*.ini"))
                except OSError:
                    scanned = []
                return [php_ini, *scanned]
    return []


def default_socket(etc: Path = PHP_ETC) -> tuple[str, str]:
    """(socket path, where it came from): the last non-empty pdo_mysql.default_socket in PHP's ini
    files, else MariaDB's default path."""
    found: tuple[str, str] | None = None
    for path in _ini_files(etc):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            item = scan_line(line)
            if isinstance(item, Entry) and item.offset is None and item.key == "pdo_mysql.default_socket":
                value = item.value.literal
                if value and value.strip():
                    found = (value.strip(), f"pdo_mysql.default_socket in {path}")
    return found or (MARIADB_SOCKET, "the default socket of PHP's pdo_mysql and MariaDB")


def localhost_socket(host: str, etc: Path = PHP_ETC) -> tuple[str, str] | None:
    """The socket pdo_mysql opens for `host` (with its origin), or None when it uses TCP."""
    if host == "localhost":
        return default_socket(etc)
    if host.lower() == "localhost":
        return MYSQLND_SOCKET, f"mysqlnd's built-in socket for host {host!r} (only 'localhost' exactly " \
                               "takes pdo_mysql.default_socket)"
    return None
