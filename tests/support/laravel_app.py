"""A real Laravel 8 app on Debian's php-laravel-framework (tests/support/laravel_app/), with artisan.

The app has config/, routes/web.php (GET /feature answers `feature=` and config('shop.feature'), which
comes from FEATURE_FLAG in .env), and serves through PHP-FPM from public/index.php.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from exporter.php import fastcgi

SKELETON = Path(__file__).parent / "laravel_app"
FRAMEWORK = Path("/usr/share/php/Illuminate/Foundation/Application.php")
# What the framework needs in a pool whose conf.d loads nothing by itself.
EXTENSIONS = {"20-laravel.ini": "extension=tokenizer.so\nextension=ctype.so\nextension=mbstring.so\n"}


def require_laravel() -> str:
    """The php CLI, or skip: artisan needs it and Debian's framework package."""
    php = shutil.which("php")
    if php is None or not FRAMEWORK.is_file():
        pytest.skip("php8.2-cli and php-laravel-framework are needed (apt-get install them)")
    return php


def make_app(root: Path, env: str = "FEATURE_FLAG=on\nDB_DATABASE=shop\n") -> Path:
    """A copy of the skeleton at `root` with `env` as its .env, every file dated a minute ago."""
    shutil.copytree(SKELETON, root)
    for d in ("bootstrap/cache", "storage/framework/views", "storage/framework/cache", "storage/logs",
              "resources/views"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / ".env").write_text(env)
    backdate(root, 60)
    return root


def backdate(root: Path, seconds: float) -> None:
    """Every file and directory of the app `seconds` in the past, so what a test changes next is newer."""
    then = time.time() - seconds
    for dirpath, _, names in os.walk(root):
        for p in (dirpath, *(os.path.join(dirpath, n) for n in names)):
            os.utime(p, (then, then), follow_symlinks=False)


def artisan(root: Path, *args: str, env: dict[str, str] | None = None) -> None:
    php = require_laravel()
    proc = subprocess.run([php, "artisan", *args], cwd=root, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)
    assert proc.returncode == 0, f"artisan {' '.join(args)}: {proc.stdout}{proc.stderr}"


def cache_all(root: Path, seconds_ago: float = 30) -> None:
    """config:cache, route:cache and event:cache as a deploy runs them, the caches dated `seconds_ago`."""
    for command in ("config:cache", "route:cache", "event:cache"):
        artisan(root, command)
    then = time.time() - seconds_ago
    for p in (root / "bootstrap" / "cache").iterdir():
        os.utime(p, (then, then))


async def get(address: str, root: Path, uri: str, *, timeout: float = 10.0) -> fastcgi.Response:
    """A request for `uri` to the app's public/index.php through FPM, as nginx would send it."""
    public = root / "public"
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1",
        "SCRIPT_FILENAME": str(public / "index.php"), "SCRIPT_NAME": "/index.php",
        "REQUEST_URI": uri, "QUERY_STRING": "", "DOCUMENT_ROOT": str(public),
        "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "shop.test", "SERVER_PORT": "80", "HTTP_HOST": "shop.test",
    }
    return await fastcgi.request(address, params, connect_timeout=2, read_timeout=timeout)


def get_sync(address: str, root: Path, uri: str) -> fastcgi.Response:
    return asyncio.run(get(address, root, uri))
