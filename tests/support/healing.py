"""Building blocks for the heal tests: a Laravel-shaped app directory, compiled views, payloads."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config, parse

TOKEN = "s3cret-heal-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Blade needs these; a test pool's private conf.d loads nothing by itself.
LARAVEL_EXTENSIONS = {"20-laravel.ini": "extension=tokenizer.so\nextension=ctype.so\nextension=mbstring.so\n"}


def require_blade() -> None:
    if not Path("/usr/share/php/Illuminate/View/Compilers/BladeCompiler.php").exists():
        pytest.skip("Debian's php-laravel-framework is not installed")


def require_php_cli() -> str:
    php = shutil.which("php")
    if php is None:
        pytest.skip("the php CLI is not installed (apt-get install php8.2-cli)")
    return php


def make_app_dir(root: Path) -> Path:
    """A Laravel-shaped directory: resources/views and storage/framework/views."""
    (root / "resources" / "views").mkdir(parents=True)
    (root / "storage" / "framework" / "views").mkdir(parents=True)
    return root


def views_dir(root: Path) -> Path:
    return root / "resources" / "views"


def compiled_dir(root: Path) -> Path:
    return root / "storage" / "framework" / "views"


def write_compiled(root: Path, source: str, body: str = "<?php echo 'x'; ?>",
                   mtime: float | None = None) -> Path:
    """A compiled view the way Laravel 8.83 names and ends it."""
    path = compiled_dir(root) / (hashlib.sha1(f"v2{source}".encode()).hexdigest() + ".php")  # noqa: S324
    path.write_text(f"{body}<?php /**PATH {source} ENDPATH**/ ?>")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_view(root: Path, name: str, text: str, mtime: float | None = None) -> Path:
    path = views_dir(root) / f"{name}.blade.php"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def heal_config(root: Path | None, token_file: Path | None, **heal: Any) -> Config:
    data: dict[str, Any] = {"heal": {"token_file": str(token_file) if token_file else None,
                                     "token_env": "CACHEWARDEN_TEST_NO_SUCH_VARIABLE", **heal}}
    if root is not None:
        data["laravel"] = [{"name": "shop", "root": str(root)}]
    return parse(data)


def token_file(tmp_path: Path, token: str = TOKEN) -> Path:
    path = tmp_path / "heal-token"
    path.write_text(token + "\n")
    path.chmod(0o600)  # a token file others can read is refused when it is ours (exporter.heal.token)
    return path


def alert(alertname: str, target: str = "shop", *, status: str = "firing", fingerprint: str = "fp-1",
          starts_at: str = "2026-01-01T00:00:00Z", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": alertname, "target": target, **labels},
            "annotations": {}, "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint}


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "receiver": "cachewarden",
            "status": status, "alerts": list(alerts), "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager"}


def an_hour_ago() -> float:
    return time.time() - 3600


# The pace of a Swapper: how long the symlink stays, then the real directory (in seconds).
LINK_PAUSE = 0.002
REAL_PAUSE = 0.004


class Swapper(threading.Thread):
    """The app's user swapping a directory of its own for a symlink to `outside`, and back, until stopped."""

    def __init__(self, directory: Path, outside: Path, pauses: tuple[float, float] = (LINK_PAUSE, REAL_PAUSE),
                 ) -> None:
        super().__init__(daemon=True)
        self.directory, self.outside = directory, outside
        self.link_pause, self.real_pause = pauses
        self.parked = directory.with_name(directory.name + ".parked")
        self.halt = threading.Event()
        self.swaps = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                os.rename(self.directory, self.parked)
                os.symlink(self.outside, self.directory)
                self.halt.wait(self.link_pause)  # the attacker's pace, not a wait for anything
                os.unlink(self.directory)
                os.rename(self.parked, self.directory)
                self.swaps += 1
                self.halt.wait(self.real_pause)
        except BaseException as exc:  # reported by the test, which must not hang on a dead thread
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)
        assert not self.is_alive()
        assert self.error is None, self.error
        assert self.directory.is_dir()
        assert not self.directory.is_symlink()
