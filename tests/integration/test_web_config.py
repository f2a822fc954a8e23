"""`--web.config.file` against the real clients: Prometheus scrapes over TLS with basic auth, Alertmanager
posts to /heal over TLS with its credentials_file, and a rotated certificate is served without a restart.

The clients' configurations are the shipped examples (examples/prometheus.yml's scrape job,
examples/alertmanager.yml's webhook) with only their addresses and file paths pointed at this test.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from tests.support.alertmanager import run_alertmanager
from tests.support.prometheus import ROOT, Cachewarden, run_cachewarden, run_prometheus
from tests.support.tls import CA, Pair, client_context, make_ca
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
TOKEN = "web-config-test-heal-token"


def web_config(pair: Pair, **extra: Any) -> dict[str, Any]:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    return {"tls_server_config": {"cert_file": str(pair.cert), "key_file": str(pair.key)},
            "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
            "basic_auth_users": {"prometheus": hashed}, **extra}


def get(url: str, context: ssl.SSLContext | None, user: str | None = None,
        password: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 - local test server
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def metric(served: Cachewarden, ctx: ssl.SSLContext, line_start: str) -> float | None:
    _, _, body = get(f"{served.url}/metrics", ctx, "prometheus", PASSWORD)
    for line in body.decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path / "pki")


def shipped_scrape_job(ca: CA, password_file: Path) -> dict[str, Any]:
    shipped = yaml.safe_load((ROOT / "examples" / "prometheus.yml").read_text())
    job: dict[str, Any] = shipped["scrape_configs"][0]
    job["tls_config"]["ca_file"] = str(ca.cert)
    job["basic_auth"]["password_file"] = str(password_file)
    return {k: job[k] for k in ("scheme", "tls_config", "basic_auth")}


def test_prometheus_scrapes_over_tls_with_basic_auth_and_others_are_refused(tmp_path: Path, ca: CA) -> None:
    pair = ca.issue(tmp_path / "pki", "server")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    ctx = client_context(ca)
    with run_cachewarden({}, tmp_path / "cw", web_config=web_config(pair), tls=ctx) as served:
        job = shipped_scrape_job(ca, password_file)
        assert job["scheme"] == "https"
        with run_prometheus(tmp_path / "prom", scrape=[served.address], scrape_options=job) as prom:
            wait_for(lambda: prom.query('up{job="cachewarden"} == 1')
                     and prom.query("cachewarden_http_max_connections"),
                     timeout=30, message="Prometheus scraping over TLS with basic auth")

        status, headers, _ = get(f"{served.url}/metrics", ctx, "prometheus", PASSWORD)
        assert status == 200
        assert headers["X-Content-Type-Options"] == "nosniff"
        for user, password in (("prometheus", "wrong"), ("nobody", PASSWORD), (None, None)):
            status, headers, _ = get(f"{served.url}/metrics", ctx, user, password)
            assert status == 401, (user, password)
            assert headers["WWW-Authenticate"] == "Basic"
        assert get(f"{served.url}/", ctx, "prometheus", "wrong")[0] == 401
        assert get(f"{served.url}/", ctx, "prometheus", PASSWORD)[0] == 200
        assert get(f"{served.url}/healthz", ctx)[0] == 200  # liveness probes need no password

        # A plain-HTTP client gets no answer, only a closed connection, and is counted.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            get(f"http://{served.address}/healthz", None)
        failed = 'cachewarden_http_connections_closed_total{reason="tls_handshake_failed"'
        assert (metric(served, ctx, failed) or 0) >= 1
        # So is a client that does not trust the certificate.
        with pytest.raises(urllib.error.URLError):
            get(f"{served.url}/healthz", ssl.create_default_context())


def test_alertmanager_posts_to_heal_over_tls_with_its_credentials_file(tmp_path: Path, ca: CA) -> None:
    pair = ca.issue(tmp_path / "pki", "server")
    token = tmp_path / "heal-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    ctx = client_context(ca)
    config = {"heal": {"token_file": str(token), "token_env": "CACHEWARDEN_WEB_TEST_NO_SUCH_VARIABLE"}}
    with run_cachewarden(config, tmp_path / "cw", web_config=web_config(pair), tls=ctx) as served:
        am_config: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "alertmanager.yml").read_text())
        for route in (am_config["route"], *am_config["route"]["routes"]):
            route.update(group_wait="1s", group_interval="1s")
        receiver = next(r for r in am_config["receivers"] if r["name"] == "cachewarden-heal")
        webhook = receiver["webhook_configs"][0]
        assert webhook["url"].startswith("https://")
        webhook["url"] = f"{served.url}/heal"
        webhook["http_config"]["authorization"]["credentials_file"] = str(token)
        webhook["http_config"]["tls_config"]["ca_file"] = str(ca.cert)
        with run_alertmanager(am_config, tmp_path / "am") as am:
            labels = {"alertname": "CachewardenViewsStale", "target": "shop", "job": "cachewarden"}
            alert = [{"labels": labels, "annotations": {"summary": "test"}}]
            req = urllib.request.Request(  # noqa: S310 - the test's Alertmanager
                f"{am.url}/api/v2/alerts", data=json.dumps(alert).encode(),
                headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).close()  # noqa: S310 - the test's Alertmanager
            accepted = 'cachewarden_heal_requests_total{outcome="accepted"'
            wait_for(lambda: (metric(served, ctx, accepted) or 0) >= 1, timeout=30,
                     message="/heal accepted Alertmanager's request over TLS")
        # The bearer token was enough: /heal is not behind basic auth, and nothing was refused.
        for outcome in ("unauthorized", "forbidden"):
            assert not metric(served, ctx, f'cachewarden_heal_requests_total{{outcome="{outcome}"')


def served_certificate(address: str, ctx: ssl.SSLContext) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock, \
            ctx.wrap_socket(sock, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path, ca: CA) -> None:
    live = tmp_path / "live"
    first = ca.issue(live, "tls")
    ctx = client_context(ca)
    with run_cachewarden({}, tmp_path / "cw", web_config=web_config(first), tls=ctx) as served:
        old = first.der()
        assert served_certificate(served.address, ctx) == old
        # cert-manager writes the new pair; a key that does not match the certificate yet is not
        # served: the old pair stays until the new one is whole.
        second = ca.issue(tmp_path / "next", "tls", cn="rotated")
        new = second.der()
        assert new != old
        os.replace(second.key, first.key)
        assert served_certificate(served.address, ctx) == old
        os.replace(second.cert, first.cert)
        wait_for(lambda: served_certificate(served.address, ctx) == new, timeout=10,
                 message="the rotated certificate served")
        assert get(f"{served.url}/metrics", ctx, "prometheus", PASSWORD)[0] == 200
        log = served.log.read_text()
        assert "KEY_VALUES_MISMATCH" in log
        assert "still serving" in log


def test_client_certificates_are_required_verified_and_matched_against_client_allowed_sans(
        tmp_path: Path, ca: CA) -> None:
    pair = ca.issue(tmp_path / "pki", "server")
    allowed = ca.issue(tmp_path / "pki", "prometheus", cn="prometheus", client=True, sans="DNS:prometheus")
    other = ca.issue(tmp_path / "pki", "other", cn="other", client=True, sans="DNS:other")
    stranger = make_ca(tmp_path / "elsewhere").issue(tmp_path / "elsewhere", "prometheus", cn="prometheus",
                                                    client=True, sans="DNS:prometheus")
    config = {"tls_server_config": {"cert_file": str(pair.cert), "key_file": str(pair.key),
                                    "client_auth_type": "RequireAndVerifyClientCert",
                                    "client_ca_file": str(ca.cert), "client_allowed_sans": ["prometheus"]}}
    with run_cachewarden({}, tmp_path / "cw", web_config=config, tls=client_context(ca, allowed)) as served:
        assert get(f"{served.url}/metrics", client_context(ca, allowed))[0] == 200
        assert get(f"{served.url}/metrics", client_context(ca, other))[0] == 403
        for refused in (client_context(ca), client_context(ca, stranger)):
            # TLS 1.3 reports the refusal after the handshake: on the first read, as a reset or alert.
            with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
                get(f"{served.url}/metrics", refused)


def test_silent_connections_to_the_tls_port_do_not_lock_out_a_scrape(tmp_path: Path, ca: CA) -> None:
    """Connections that never send a ClientHello are slow clients: the oldest make room for a scrape
    instead of holding every slot until their handshake times out."""
    pair = ca.issue(tmp_path / "pki", "server")
    ctx = client_context(ca)
    config = {"web": {"max_connections": 8, "read_header_timeout": "30s"}}
    with run_cachewarden(config, tmp_path / "cw", web_config=web_config(pair), tls=ctx) as served:
        host, port = served.address.rsplit(":", 1)
        silent = [socket.create_connection((host, int(port)), timeout=5) for _ in range(20)]
        try:
            # Well inside the 30 s handshake deadline: only making room lets this scrape in.
            assert get(f"{served.url}/metrics", ctx, "prometheus", PASSWORD)[0] == 200
            made_room = metric(served, ctx, 'cachewarden_http_connections_closed_total{reason="make_room"')
            assert (made_room or 0) >= 1
        finally:
            for sock in silent:
                sock.close()
