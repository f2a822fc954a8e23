"""Real Alertmanager for tests (Debian's `prometheus-alertmanager`) on a free port with tmp storage.

Clustering is switched off (`--cluster.listen-address=`): otherwise every instance binds the same gossip
port and two test runs could not coexist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.prometheus import http_json, require_binary, running
from tests.support.wait import free_port


@dataclass
class Alertmanager:
    address: str  # host:port, what Prometheus' alerting config wants
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = http_json(f"{self.url}/api/v2/alerts")
        return alerts


@contextmanager
def run_alertmanager(config: dict[str, Any], root: Path) -> Iterator[Alertmanager]:
    binary = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    root.mkdir(parents=True, exist_ok=True)
    config_file = root / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    log = root / "alertmanager.log"
    server = Alertmanager(address, log)
    argv = [binary, f"--config.file={config_file}", f"--storage.path={root / 'data'}",
            f"--web.listen-address={address}", "--cluster.listen-address=", "--log.level=warn"]
    with running(argv, log, f"{server.url}/-/ready", "alertmanager ready"):
        yield server
