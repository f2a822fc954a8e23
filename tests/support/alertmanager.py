"""Real Alertmanager for tests (Debian's `prometheus-alertmanager`) on a free port with tmp storage.

Clustering is switched off (`--cluster.listen-address=`): otherwise every instance binds the same gossip
port and two test runs could not coexist.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.prometheus import check_alive, http_json, http_ok, require_binary, stop_process
from tests.support.wait import free_port, wait_for


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
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={config_file}", f"--storage.path={root / 'data'}",
             f"--web.listen-address={address}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    server = Alertmanager(address, log)
    try:
        wait_for(lambda: check_alive(proc, log) and http_ok(f"{server.url}/-/ready"), timeout=30,
                 message="alertmanager ready")
        yield server
    finally:
        stop_process(proc)
