"""The deploy examples stay in step with the command and the endpoint they call."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from exporter.cli import _parser
from exporter.deploy.records import PHASES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "deploy"


def test_the_shell_example_calls_deploy_with_flags_the_command_knows() -> None:
    text = (EXAMPLES / "deploy.sh").read_text()
    assert subprocess.run(["sh", "-n", str(EXAMPLES / "deploy.sh")], check=False).returncode == 0
    calls = [["deploy", "--config.file", "c.yaml", "--target", "shop", *shlex.split(line.split("$CW", 1)[1])]
             for line in text.splitlines() if "$CW --" in line]
    assert len(calls) == 3
    for argv in calls:
        argv = [a for a in argv if a not in (";", "then", "||", "true")]
        args = _parser().parse_args(argv)
        assert set(args.phases.split(",")) <= set(PHASES)


def test_the_deployer_recipe_is_php_and_calls_deploy_with_flags_the_command_knows() -> None:
    path = EXAMPLES / "deployer.php"
    if shutil.which("php"):
        assert subprocess.run(["php", "-l", str(path)], capture_output=True, check=False).returncode == 0
    text = path.read_text()
    runs = re.findall(r"run\('\{\{cachewarden\}\} deploy (.*?)'", text)
    assert len(runs) == 2
    for flags in runs:
        argv = ["deploy", "--config.file", "c.yaml", *shlex.split(re.sub(r"\{\{\w+\}\}", "X", flags))]
        args = _parser().parse_args(argv)
        assert set(args.phases.split(",")) <= set(PHASES)


def test_the_workflow_posts_to_deploy_with_parameters_the_endpoint_takes() -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    scripts = [s["run"] for s in workflow["jobs"]["deploy"]["steps"] if "/deploy?" in s.get("run", "")]
    assert len(scripts) == 2
    for script in scripts:
        url = re.search(r'"\$SIDECAR(/deploy\?[^"]+)"', script)
        assert url is not None
        query = parse_qs(urlsplit(url.group(1)).query)
        assert set(query) <= {"target", "release", "previous_release", "phases", "dry_run", "timeout"}
        assert "switch" not in query["phases"][0]
        assert "--fail-with-body" in script


@pytest.mark.parametrize("name", ["deploy.sh", "deployer.php", "github-actions.yml"])
def test_every_example_is_shipped(name: str) -> None:
    assert (EXAMPLES / name).is_file()
