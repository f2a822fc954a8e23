"""Real Prometheus for tests (Debian's `prometheus`), and a real `cachewarden serve` process for it to scrape.

Each server gets a free port, its own storage under the test's tmp_path, and a 1 s scrape and rule
evaluation interval, so several test runs can coexist and alerts move within seconds. Both are context
managers that stop their process whatever the test did.
"""

from __future__ import annotations

import json
import math
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import check_alive, stop_process
from tests.support.wait import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path


def http_json(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
              timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310 - local test servers
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        return json.loads(resp.read())


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Prometheus:
    url: str
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector; raises with Prometheus' own error text on a bad query."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            body = http_json(url)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"query {expr!r} rejected: {exc.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts, as Prometheus' /api/v1/alerts lists them."""
        alerts: list[dict[str, Any]] = http_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return alerts

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["labels"]["alertname"] == alertname and a["state"] == "firing"]

    def rule_health(self) -> list[tuple[str, str, str]]:
        """(rule name, health, last error) of every loaded rule."""
        groups = http_json(f"{self.url}/api/v1/rules")["data"]["groups"]
        return [(r["name"], r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]]

    def target_health(self) -> list[str]:
        targets = http_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"]
        return [t["health"] for t in targets]


@contextmanager
def run_prometheus(
    root: Path,
    *,
    scrape: Sequence[str],
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
    interval: str = "1s",
    scrape_options: dict[str, Any] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping `scrape` (host:port of cachewarden processes, job "cachewarden") every
    `interval`, evaluating `rule_files` as often, and sending alerts to `alertmanager` (host:port).
    `scrape_options` go into the scrape config as they are (scheme, tls_config, basic_auth)."""
    binary = require_binary("prometheus", "prometheus")
    root.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "cachewarden", "static_configs": [{"targets": list(scrape)}],
                            **(scrape_options or {})}],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    config_file = root / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = root / "prometheus.log"
    server = Prometheus(f"http://127.0.0.1:{port}", log)
    argv = [binary, f"--config.file={config_file}", f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    with running(argv, log, f"{server.url}/-/ready", "prometheus ready"):
        yield server


@dataclass
class Cachewarden:
    address: str  # host:port
    log: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"


@contextmanager
def run_cachewarden(config: dict[str, Any], root: Path, *, web_config: dict[str, Any] | None = None,
                    tls: ssl.SSLContext | None = None) -> Iterator[Cachewarden]:
    """`cachewarden serve` as its own process, as Prometheus scrapes it in production.

    `web_config` is written to a `--web.config.file`; with TLS in it, `tls` is the client context
    the readiness check connects with."""
    root.mkdir(parents=True, exist_ok=True)
    config_file = root / "cachewarden.yaml"
    config_file.write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    log = root / "cachewarden.log"
    served = Cachewarden(address, log, "https" if tls is not None else "http")
    argv = [sys.executable, "-m", "exporter", "serve", "--config.file", str(config_file),
            "--web.listen-address", address]
    if web_config is not None:
        web_config_file = root / "web-config.yml"
        web_config_file.write_text(yaml.safe_dump(web_config))
        argv += ["--web.config.file", str(web_config_file)]
    with running(argv, log, f"{served.url}/healthz", "cachewarden serve answering /healthz", cwd=ROOT,
                 context=tls):
        yield served


@contextmanager
def running(argv: Sequence[str], log: Path, ready_url: str, what: str,
            cwd: Path | None = None, context: ssl.SSLContext | None = None) -> Iterator[None]:
    """A server process with its output in `log`, ready once `ready_url` answers; stopped on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        wait_for(lambda: check_alive(proc, log) and http_ok(ready_url, context), timeout=30, message=what)
        yield
    finally:
        stop_process(proc)


# What Grafana substitutes when "All" is selected and for its built-in interval, at a 1 s scrape.
GRAFANA_VARIABLES = {"$job": ".+", "$target": ".+", "$__rate_interval": "1m", "$__interval": "15s"}


def grafana_substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def shipped_dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((ROOT / "grafana" / "dashboards").glob("*.json"))]


def dashboard_queries(*, annotations: bool = False) -> list[tuple[str, str]]:
    """(dashboard / panel title, expression) of every panel query, or of every annotation query."""
    out = []
    for board in shipped_dashboards():
        if annotations:
            out.extend((f"{board['uid']} / {a['name']}", a["expr"])
                       for a in board["annotations"]["list"] if "expr" in a)
        else:
            out.extend((f"{board['uid']} / {p['title']}", t["expr"])
                       for p in board["panels"] for t in p.get("targets", []))
    return out


def panel_problems(prometheus: Prometheus, queries: Sequence[tuple[str, str]]) -> list[str]:
    """The queries a Grafana panel would show as empty, NaN or infinite, with what was wrong."""
    problems = []
    for title, expr in queries:
        result = prometheus.query(grafana_substitute(expr))
        if not result:
            problems.append(f"{title}: no data from {expr}")
        elif bad := [r["metric"] for r in result if not math.isfinite(float(r["value"][1]))]:
            problems.append(f"{title}: NaN or infinite for {bad} from {expr}")
    return problems
