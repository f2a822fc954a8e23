"""The shipped rules, their promtool unit tests and the example configs, checked by the real tools."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.heal.plans import DEFAULT_PLANS
from tests.support.prometheus import require_binary

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "alerts").glob("*.yml"))
TEST_FILES = sorted((ROOT / "alerts" / "tests").glob("*.yaml"))

pytestmark = pytest.mark.integration


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def test_promtool_accepts_every_rule_file() -> None:
    assert RULE_FILES
    done = run(require_binary("promtool", "prometheus"), "check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass_for_every_rule_file() -> None:
    assert TEST_FILES
    done = run(require_binary("promtool", "prometheus"), "test", "rules", *map(str, TEST_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(TEST_FILES)


def test_example_prometheus_config_loads_the_shipped_rules() -> None:
    done = run(require_binary("promtool", "prometheus"), "check", "config", "examples/prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(RULE_FILES)} rule files found" in done.stdout


def test_example_alertmanager_config_is_valid() -> None:
    amtool = require_binary("amtool", "prometheus-alertmanager")
    done = run(amtool, "check-config", "examples/alertmanager.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_alertmanager_sends_exactly_the_alerts_with_heal_plans_to_heal() -> None:
    config = yaml.safe_load((ROOT / "examples" / "alertmanager.yml").read_text(encoding="utf-8"))
    heal_routes = [r for r in config["route"]["routes"] if r["receiver"] == "cachewarden-heal"]
    assert len(heal_routes) == 1
    matcher = re.fullmatch(r'alertname =~ "(.*)"', heal_routes[0]["matchers"][0])
    assert matcher is not None
    assert set(matcher.group(1).split("|")) == set(DEFAULT_PLANS)
    assert heal_routes[0]["continue"] is True, "people on call must still hear about healed alerts"
    receiver = next(r for r in config["receivers"] if r["name"] == "cachewarden-heal")
    webhook = receiver["webhook_configs"][0]
    assert webhook["url"].endswith("/heal")
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["credentials_file"]
