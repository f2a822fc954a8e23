"""`--web.config.file`: the format read as exporter-toolkit reads it, and the auth it asks of requests."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter import web_auth
from exporter.config import ConfigError
from exporter.web_auth import TokenBucket, WebAuth
from exporter.web_config import CIPHER_SUITES, WebConfigFile, build_ssl_context, parse_web_config

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


def problems(data: Any, tmp_path: Path | None = None) -> list[str]:
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    with pytest.raises(ConfigError) as info:
        parse_web_config(text, "web.yml", tmp_path or Path("/"))
    return info.value.problems


@pytest.mark.parametrize(("data", "expected"), [
    ({"tls_server_config": {"cert_fil": "x"}}, "tls_server_config.cert_fil: unknown key"),
    ({"basic_auth_user": {}}, "basic_auth_user: unknown key"),
    ({"http_server_config": {"header": {}}}, "http_server_config.header: unknown key"),
    ({"rate_limit": {"intervals": "1s"}}, "rate_limit.intervals: unknown key"),
    ({"tls_server_config": {"cert_file": "a", "key_file": "b", "min_version": "TLS1.2"}},
     "tls_server_config.min_version: Input should be 'TLS10', 'TLS11', 'TLS12' or 'TLS13'"),
])
def test_unknown_keys_and_values_are_refused_with_their_path(data: dict[str, Any], expected: str) -> None:
    assert expected in problems(data)


def test_a_key_given_twice_is_refused_as_yaml_v2_strict_does() -> None:
    (problem,) = problems("basic_auth_users:\n  a: x\nbasic_auth_users:\n  b: y\n")
    assert "line 3" in problem
    assert "'basic_auth_users' already set in map" in problem


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Set-Cookie": "a=b"}, "HTTP header 'Set-Cookie' can not be configured"),
    ({"X-Frame-Options": "allow"}, "invalid value for X-Frame-Options"),
    ({"X-Content-Type-Options": "sniff"}, "invalid value for X-Content-Type-Options"),
])
def test_only_the_toolkits_headers_and_values_may_be_set(headers: dict[str, str], expected: str) -> None:
    (problem,) = problems({"http_server_config": {"headers": headers}})
    assert problem.startswith("http_server_config: ")
    assert expected in problem


def test_the_toolkits_headers_are_accepted() -> None:
    headers = {"Strict-Transport-Security": "max-age=1", "X-Content-Type-Options": "nosniff",
               "X-Frame-Options": "sameorigin", "X-XSS-Protection": "0", "Content-Security-Policy": "x"}
    config, _ = parse_web_config(yaml.safe_dump({"http_server_config": {"headers": headers}}), "w", Path("/"))
    assert config.http_server_config.headers == headers


def test_passwords_must_be_bcrypt_hashes() -> None:
    (problem,) = problems({"basic_auth_users": {"alice": "plaintext", "bob": HASH}})
    assert problem.startswith("basic_auth_users.alice: not a bcrypt hash")


@pytest.mark.parametrize(("tls", "expected"), [
    ({"cert_file": "a"}, "missing one of key or key_file"),
    ({"key_file": "a"}, "missing one of cert or cert_file"),
    ({"cert_file": "a", "key_file": "b", "min_version": "TLS13", "max_version": "TLS12"},
     "min_version TLS13 is above max_version TLS12"),
    ({"cert_file": "a", "key_file": "b", "client_ca_file": "c"},
     "client CAs are configured without a client_auth_type"),
    ({"cert_file": "a", "key_file": "b", "client_auth_type": "RequireAnyClientCert"},
     "client_auth_type RequireAnyClientCert (a client certificate asked for but not verified) is not"),
    ({"cert_file": "a", "key_file": "b", "client_auth_type": "VerifyClientCertIfGiven",
      "client_allowed_sans": ["x"]},
     "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert"),
    ({"cert_file": "a", "key_file": "b", "cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256"]},
     "unknown cipher: ECDHE-RSA-AES128-GCM-SHA256"),
    ({"cert_file": "a", "key_file": "b", "curve_preferences": ["X25519"]},
     "curve_preferences is not supported"),
])
def test_inconsistent_tls_settings_are_refused(tls: dict[str, Any], expected: str) -> None:
    (problem,) = problems({"tls_server_config": tls})
    assert problem.startswith("tls_server_config: ")
    assert expected in problem


def test_defaults_are_the_toolkits_and_relative_paths_follow_the_file(tmp_path: Path) -> None:
    config, files = parse_web_config("tls_server_config: {cert_file: a.crt, key_file: tls/a.key}\n", "w",
                                     tmp_path)
    tls = config.tls_server_config
    assert (tls.min_version, tls.max_version, tls.prefer_server_cipher_suites) == ("TLS12", "TLS13", True)
    assert tls.client_auth_type == "NoClientCert"
    assert config.http_server_config.http2 is True
    assert (files.cert_file, files.key_file) == (str(tmp_path / "a.crt"), str(tmp_path / "tls" / "a.key"))
    assert parse_web_config("", "w", tmp_path)[0].tls_server_config.enabled is False


@pytest.mark.parametrize(("value", "seconds"), [("1s", 1.0), ("1m30s", 90.0), ("250ms", 0.25), ("0", 0.0),
                                                (1_000_000_000, 1.0)])
def test_rate_limit_interval_is_a_go_duration(value: Any, seconds: float) -> None:
    text = yaml.safe_dump({"rate_limit": {"interval": value, "burst": 2}})
    config, _ = parse_web_config(text, "w", Path("/"))
    assert config.rate_limit.interval == pytest.approx(seconds)


def test_cipher_names_map_to_the_same_suites_in_openssl() -> None:
    """Go's names are IANA's; `openssl ciphers -stdname` is the oracle for OpenSSL's name of each."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    out = subprocess.run([openssl, "ciphers", "-stdname", "ALL:@SECLEVEL=0"], capture_output=True, text=True,
                         check=True).stdout
    stdname = {line.split(" - ")[0].strip(): line.split(" - ")[1].split()[0]
               for line in out.splitlines() if " - " in line}
    for go_name, openssl_name in CIPHER_SUITES.items():
        assert stdname[go_name] == (openssl_name or go_name), go_name


def test_cipher_suites_restrict_tls12_to_those_listed(tmp_path: Path) -> None:
    from tests.support.tls import make_ca

    pair = make_ca(tmp_path).issue(tmp_path, "srv")
    config, files = parse_web_config(yaml.safe_dump({"tls_server_config": {
        "cert_file": str(pair.cert), "key_file": str(pair.key), "max_version": "TLS12",
        "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]}}), "w", tmp_path)
    ctx = build_ssl_context(config.tls_server_config, files)
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES256-GCM-SHA384"]
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2


def test_a_file_that_stops_loading_keeps_the_last_good_configuration(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {"alice": HASH}}))
    web_config = WebConfigFile(path)
    path.write_text("basic_auth_users: {alice: plaintext}\n")
    web_config.refresh()
    assert set(web_config.current.basic_auth_users) == {"alice"}
    path.write_text(yaml.safe_dump({"basic_auth_users": {"bob": HASH}}))
    web_config.refresh()
    assert set(web_config.current.basic_auth_users) == {"bob"}


def test_a_bad_file_stops_the_start_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": "missing.crt", "key_file": "k"}}))
    with pytest.raises(ConfigError) as info:
        WebConfigFile(path)
    assert info.value.problems == [
        f"tls_server_config: cannot read cert_file {tmp_path / 'missing.crt'}: No such file or directory"]


def test_token_bucket_allows_a_burst_then_one_per_interval() -> None:
    now = [0.0]
    bucket = TokenBucket(1.0, 2, monotonic=lambda: now[0])
    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert bucket.allow() is False
    now[0] = 1.0
    assert bucket.allow() is True


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: Any) -> TestClient[web.Request, web.Application]:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {"alice": HASH},
                                    "http_server_config": {"headers": {"X-Frame-Options": "deny"}}}))

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    for route in ("/", "/metrics", "/heal", "/heal/runs/1", "/healthz", "/healthzz"):
        app.router.add_get(route, ok)
    WebAuth(WebConfigFile(path)).install(app)
    result: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    return result


async def test_basic_auth_guards_metrics_and_the_status_page_not_heal_or_healthz(client: Any) -> None:
    for path in ("/", "/metrics", "/healthzz"):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert resp.headers["WWW-Authenticate"] == "Basic"
        assert resp.headers["X-Frame-Options"] == "deny"  # on refusals too
        assert (await client.get(path, headers=basic("alice", "wrong"))).status == 401
        assert (await client.get(path, headers=basic("mallory", "s3cret"))).status == 401
        assert (await client.get(path, headers=basic("alice", "s3cret"))).status == 200
    for path in ("/heal", "/heal/runs/1", "/healthz"):
        resp = await client.get(path, headers={"Authorization": "Bearer a-heal-token"})
        assert resp.status == 200, path
        assert resp.headers["X-Frame-Options"] == "deny"


async def test_a_verified_password_is_not_checked_again(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    checkpw = web_auth._checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return checkpw(password, hashed)

    monkeypatch.setattr(web_auth, "_checkpw", counting)
    for _ in range(3):
        assert (await client.get("/metrics", headers=basic("alice", "s3cret"))).status == 200
        assert (await client.get("/metrics", headers=basic("alice", "wrong"))).status == 401
    assert calls.count(b"s3cret") == 1
    assert calls.count(b"wrong") == 3  # failures are not remembered


def test_serve_refuses_to_start_on_a_bad_web_configuration(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import EXIT_BAD_CONFIG, main

    config, web_yml = tmp_path / "cachewarden.yaml", tmp_path / "web.yml"
    config.write_text("{}\n")
    web_yml.write_text("tls_server_config:\n  certfile: x\n")

    argv = ["serve", "--config.file", str(config), "--web.config.file", str(web_yml)]
    assert main(argv) == EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert f"{web_yml}: invalid configuration:\n  tls_server_config.certfile: unknown key" in err


async def test_rate_limit_answers_429_past_the_burst(tmp_path: Path, aiohttp_client: Any) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"rate_limit": {"interval": "1h", "burst": 2}}))
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/metrics", ok)
    WebAuth(WebConfigFile(path)).install(app)
    client = await aiohttp_client(app)
    assert [(await client.get("/metrics")).status for _ in range(3)] == [200, 200, 429]


def test_an_inline_certificate_and_key_are_loaded_and_their_temporary_copy_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from tests.support.tls import make_ca

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    pair = make_ca(tmp_path).issue(tmp_path, "srv")
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"tls_server_config": {"cert": pair.cert.read_text(),
                                                          "key": pair.key.read_text()}}))
    web_config = WebConfigFile(path)
    ctx = web_config.ssl_context()
    assert ctx is not None
    assert web_config.tls
    assert list(scratch.iterdir()) == []  # OpenSSL read the PEM from a private file, removed at once


async def test_users_changed_in_the_file_apply_without_a_restart(tmp_path: Path, aiohttp_client: Any) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {"alice": HASH}}))
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/metrics", ok)
    WebAuth(WebConfigFile(path)).install(app)
    client = await aiohttp_client(app)
    assert (await client.get("/metrics", headers=basic("alice", "s3cret"))).status == 200
    replacement = tmp_path / "web.yml.new"
    replacement.write_text(yaml.safe_dump({"basic_auth_users": {"bob": HASH}}))
    replacement.replace(path)  # as a configuration management tool or a Secret volume does

    assert (await client.get("/metrics", headers=basic("alice", "s3cret"))).status == 401
    assert (await client.get("/metrics", headers=basic("bob", "s3cret"))).status == 200


def test_only_hashes_the_bcrypt_package_reads_are_accepted() -> None:
    for prefix in ("$2a$", "$2b$", "$2x$", "$2y$"):
        parse_web_config(yaml.safe_dump({"basic_auth_users": {"u": prefix + HASH[4:]}}), "w", Path("/"))
    (problem,) = problems({"basic_auth_users": {"u": "$2$" + HASH[4:]}})
    assert problem.startswith("basic_auth_users.u: not a bcrypt hash")


def test_serve_refuses_a_tls_key_file_others_can_read_as_ssh_refuses_a_private_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import EXIT_BAD_CONFIG, main
    from tests.support.tls import make_ca

    pair = make_ca(tmp_path).issue(tmp_path, "srv")
    pair.key.chmod(0o644)
    config, web_yml = tmp_path / "cachewarden.yaml", tmp_path / "web.yml"
    config.write_text("heal: {enabled: false}\n")
    web_yml.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(pair.cert),
                                                             "key_file": str(pair.key)}}))

    argv = ["serve", "--config.file", str(config), "--web.config.file", str(web_yml)]
    assert main(argv) == EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert f"tls_server_config.key_file: {pair.key} belongs to the user cachewarden runs as" in err
    assert "chmod 600" in err
