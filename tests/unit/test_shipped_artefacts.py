"""The shipped dashboards, Kubernetes manifests and systemd unit, checked by the schemas and tools of
the programs that read them: Grafana's dashboard schema (from grafana-foundation-sdk), the Kubernetes
API schemas (kubernetes-validate, which ships them: no network), and `systemd-analyze verify`.
The Dockerfile is linted by hadolint in tests/integration/test_dockerfile.py; every dashboard query runs
on a real Prometheus in tests/integration/test_loop.py.
"""

from __future__ import annotations

import copy
import json
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter.cli import _parser
from exporter.config import AlertsConfig
from exporter.render import render_all
from exporter.render.dashboards import SCHEMA_VERSION
from tests.support.grafana_schema import type_errors, unknown_keys

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# Keys Grafana reads that the SDK's typed dashboard model does not define. Grafana's own schema leaves
# an annotation query open to its datasource's fields: the Prometheus ones below title, tag and step
# the heal-run annotations. `definition` is the query text Grafana's variable editor shows.
OPEN_KEYS = {
    ".annotations.list[].step", ".annotations.list[].tagKeys", ".annotations.list[].textFormat",
    ".annotations.list[].titleFormat", ".annotations.list[].useValueForTime",
    ".templating.list[].definition",
}
# The Kubernetes releases the manifests are checked against: the oldest still maintained and the
# newest the installed kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.32", kubernetes_validate.utils.latest_version())


def rendered_dashboards() -> dict[str, dict[str, Any]]:
    return {str(f.path): json.loads(f.text) for f in render_all(AlertsConfig())
            if f.path.parts[0] == "grafana"}


def checked_in_dashboards() -> dict[str, dict[str, Any]]:
    return {str(p.relative_to(ROOT)): json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((ROOT / "grafana" / "dashboards").glob("*.json"))}


def test_every_dashboard_holds_only_keys_grafanas_schema_defines_with_the_types_it_defines() -> None:
    dashboards = {**rendered_dashboards(), **checked_in_dashboards()}
    assert len(dashboards) >= 7
    for path, dashboard in dashboards.items():
        assert unknown_keys(dashboard) <= OPEN_KEYS, path
        assert type_errors(dashboard) == [], path


def test_the_open_keys_are_the_ones_the_dashboards_use() -> None:
    # If the schema learns one of them, or the dashboards stop writing it, the allowance must shrink.
    used = set().union(*(unknown_keys(d) for d in rendered_dashboards().values()))
    assert used == OPEN_KEYS


def test_the_dashboards_declare_the_schema_version_of_the_pinned_sdk_release() -> None:
    # schemaVersion 39 is Grafana 10.3 to 11.x; the SDK release is the one generated for Grafana 11.0.
    from importlib.metadata import version

    assert SCHEMA_VERSION == 39
    assert version("grafana-foundation-sdk").endswith("!11.0.0")


def test_the_schema_check_finds_a_misspelled_key_and_a_value_of_the_wrong_type() -> None:
    dashboard = copy.deepcopy(rendered_dashboards()["grafana/dashboards/cachewarden-fpm.json"])
    panel = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    panel["fieldConfig"]["defaults"]["unitt"] = "s"
    panel["targets"][0]["exprr"] = "up"
    panel["gridPos"]["w"] = "12"
    panel["options"]["legend"]["placement"] = "middle"

    assert unknown_keys(dashboard) - OPEN_KEYS == {
        ".panels[].fieldConfig.defaults.unitt", ".panels[].targets[].exprr"}
    errors = type_errors(dashboard)
    assert len(errors) == 2
    assert any(".gridPos.w: '12' is not int" in e for e in errors)
    assert any(".options.legend.placement: 'middle'" in e for e in errors)


def kubernetes_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted((EXAMPLES / "kubernetes").glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return documents


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the check tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_example_validates_strictly_against_the_api_schemas(version: str) -> None:
    documents = kubernetes_documents()
    assert {d["kind"] for d in documents} >= {"ConfigMap", "Deployment"}
    for document in documents:
        # strict: a field the API does not define is an error, as `kubectl apply` rejects it
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.usefixtures("no_network")
def test_kubernetes_validation_rejects_a_misspelled_field() -> None:
    (deployment,) = [copy.deepcopy(d) for d in kubernetes_documents() if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


UNIT = EXAMPLES / "systemd" / "cachewarden.service"


def exec_start() -> list[str]:
    lines = UNIT.read_text(encoding="utf-8").splitlines()
    (line,) = [line for line in lines if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def verify_in_root(root: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of `unit_text` as /etc/systemd/system/cachewarden.service in `root`.

    A root of its own, not the host: its unit directory holds Debian's systemd units (sysinit.target
    and the rest the unit's dependencies pull in), and ExecStart's /opt/cachewarden/bin/cachewarden is
    the installed entry point copied there, so the shipped text is verified byte for byte.
    """
    analyze = shutil.which("systemd-analyze")
    entry_point = Path(sys.executable).parent / "cachewarden"
    system_units = Path("/usr/lib/systemd/system")
    if analyze is None or not system_units.is_dir():
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    assert entry_point.is_file(), "cachewarden's entry point is installed beside the interpreter"
    shutil.copytree(system_units, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    binary = root / exec_start()[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    shutil.copy2(entry_point, binary)
    unit_dir = root / "etc" / "systemd" / "system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "cachewarden.service").write_text(unit_text, encoding="utf-8")
    return subprocess.run([analyze, "verify", "--man=no", f"--root={root}", "cachewarden.service"],
                          capture_output=True, text=True, check=False, timeout=60)


def test_systemd_analyze_verifies_the_shipped_unit_without_a_single_warning(tmp_path: Path) -> None:
    result = verify_in_root(tmp_path, UNIT.read_text(encoding="utf-8"))
    # verify exits 0 on warnings such as an unknown key: any output at all is a finding
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_units_command_line_is_one_the_cli_accepts() -> None:
    argv = exec_start()
    assert argv[0] == "/opt/cachewarden/bin/cachewarden"
    args = _parser().parse_args(argv[1:])
    assert args.command == "serve"


@pytest.mark.parametrize(("change", "finding"), [
    (("ReadWritePaths=", "ReadWritePath="), "Unknown key 'ReadWritePath'"),
    (("/opt/cachewarden/bin/cachewarden", "/opt/cachewarden/bin/cachewardn"), "is not executable"),
])
def test_systemd_analyze_reports_a_misspelled_key_and_a_missing_binary(
    tmp_path: Path, change: tuple[str, str], finding: str,
) -> None:
    result = verify_in_root(tmp_path, UNIT.read_text(encoding="utf-8").replace(*change))
    assert finding in result.stdout + result.stderr
