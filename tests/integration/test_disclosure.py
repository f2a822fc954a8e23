"""Every secret against every output, with hostile input: a real `cachewarden serve` process that holds
a heal token, a Redis password (a private redis-server with requirepass, also the heal's store) and a
database password (a private MariaDB user), is sent every malformed request of
tests/support/disclosure.py with each secret in it, runs a warm command, and is asked for everything
it shows. None of the three secrets may appear in any response, its log, its audit lines (log and
Redis stream), `check` in text and JSON, or the warm command's environment."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from redis import Redis

from exporter.heal.audit import STREAM
from tests.integration.test_heal_warm import write_env_command
from tests.integration.test_redis import PrivateRedis
from tests.support.disclosure import assert_nowhere, hostile_requests, send_raw
from tests.support.healing import make_app_dir
from tests.support.mariadb import PrivateMariaDB, mariadb_server
from tests.support.prometheus import ROOT, run_cachewarden

__all__ = ["mariadb_server"]  # a fixture, used by name

pytestmark = pytest.mark.integration

TOKEN = "heal-token-Secret-4417ab"
REDIS_PASSWORD = "redis-pw-Secret-9923cd"
DB_PASSWORD = "db-pw-Secret-6631ef"
SECRETS = (TOKEN, REDIS_PASSWORD, DB_PASSWORD)


def fetch(url: str, token: str | None = None, method: str = "GET") -> bytes:
    request = urllib.request.Request(  # noqa: S310 - a local test server
        url, method=method, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
        return bytes(resp.read())


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def test_no_secret_reaches_any_output_whatever_is_sent(
        tmp_path: Path, mariadb_server: PrivateMariaDB, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    (tmp_path / "redis").mkdir()
    redis_server = PrivateRedis(tmp_path / "redis", password=REDIS_PASSWORD)
    redis_server.start()
    mariadb_server.sql("DROP USER IF EXISTS 'cw_disclosure'@'127.0.0.1'; "
                       f"CREATE USER 'cw_disclosure'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'")
    db_password = tmp_path / "db-password"
    db_password.write_text(DB_PASSWORD + "\n")
    db_password.chmod(0o600)
    monkeypatch.setenv("CW_DISCLOSURE_TOKEN", TOKEN)
    monkeypatch.setenv("CW_DISCLOSURE_REDIS_PW", REDIS_PASSWORD)
    app = make_app_dir(tmp_path / "shop")
    config = {
        "laravel": [{"name": "shop", "root": str(app)}],
        "redis": [{"name": "cache", "url": redis_server.url, "password_env": "CW_DISCLOSURE_REDIS_PW"}],
        "databases": [{"name": "main", "url": mariadb_server.url(user="cw_disclosure"),
                       "password_file": str(db_password)}],
        "collectors": {"views": {"interval": "1s"}, "redis": {"interval": "1s"},
                       "sql": {"interval": "1s"}},
        "heal": {"token_env": "CW_DISCLOSURE_TOKEN", "redis_url": redis_server.url,
                 "redis_password_env": "CW_DISCLOSURE_REDIS_PW",
                 "warm": [{"target": "shop", "commands": [write_env_command("warm-env.txt")]}]},
    }
    shown: dict[str, str | bytes] = {}
    try:
        with run_cachewarden(config, tmp_path / "serve") as served:
            host, port = served.address.rsplit(":", 1)
            for secret_name, secret in zip(("token", "redis", "db"), SECRETS, strict=True):
                for form, data in hostile_requests(secret, host).items():
                    answer = send_raw((host, int(port)), data)
                    assert 400 <= status_of(answer) < 500, (form, answer[:200])
                    shown[f"answer to {form} with the {secret_name} secret"] = answer
            run = json.loads(fetch(f"{served.url}/heal?action=cache.warm&target=shop", TOKEN, "POST"))
            assert run["run"]["result"] in ("verified", "unverified"), run
            shown["manual run"] = json.dumps(run)
            shown["GET /heal/runs/ID"] = fetch(f"{served.url}/heal/runs/{run['run']['id']}", TOKEN)
            shown["GET /heal"] = fetch(f"{served.url}/heal", TOKEN)
            shown["/"] = fetch(f"{served.url}/")
            shown["/metrics"] = fetch(f"{served.url}/metrics")
            shown["/healthz"] = fetch(f"{served.url}/healthz")
            assert b'cachewarden_redis_up{target="cache"} 1.0' in shown["/metrics"]  # the password worked
            assert b'cachewarden_db_up{target="main"} 1.0' in shown["/metrics"]
        shown["serve's log"] = served.log.read_bytes()
        config_file = tmp_path / "serve" / "cachewarden.yaml"
        for fmt in ("text", "json"):
            argv = [sys.executable, "-m", "exporter", "check", "--config.file", str(config_file),
                    "--format", fmt]
            result = subprocess.run(argv, capture_output=True, timeout=60, check=False, cwd=ROOT)
            assert result.returncode in (0, 1), result.stderr
            shown[f"check --format {fmt}"] = result.stdout + result.stderr
        client = Redis(port=redis_server.port, db=3, password=REDIS_PASSWORD)
        entries = client.xrange(STREAM)
        client.close()
        assert entries, "the run's audit lines are on the stream"
        shown["audit stream"] = json.dumps([{k.decode(): v.decode() for k, v in fields.items()}
                                            for _, fields in entries])
        shown["warm command's environment"] = (app / "warm-env.txt").read_bytes()
    finally:
        redis_server.stop()
        mariadb_server.sql("DROP USER IF EXISTS 'cw_disclosure'@'127.0.0.1'")

    log = shown["serve's log"]
    assert b'"event": "heal_finished"' in log  # audit lines are in the log
    assert b"Traceback" not in log
    # About 50 malformed requests within seconds: a handful of rate-limited lines, not one each.
    assert 1 <= log.count(b"refused a malformed HTTP request") <= 5
    assert_nowhere(SECRETS, shown)
