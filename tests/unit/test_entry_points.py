"""The two commands the README opens with: what they install and start, and that CI runs the same one."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVERS = {"php8.2-fpm", "redis-server", "mariadb-server", "postgresql", "prometheus",
           "prometheus-alertmanager"}


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "the README opens with a sh block of commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def packages(profile: str) -> set[str]:
    result = subprocess.run([str(ROOT / "scripts" / "install-deps"), profile, "--list"],
                            capture_output=True, text=True, check=True, timeout=30)
    return set(result.stdout.split())


def test_readme_opens_with_the_demo_and_the_test_command_and_neither_needs_make() -> None:
    assert readme_commands() == ["scripts/run", "scripts/test-all"]
    for command in readme_commands():
        assert (ROOT / command).stat().st_mode & 0o111, f"{command} is executable"


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[-1] == f"exec {readme_commands()[1]}"


def test_the_demo_installs_fpm_but_no_database_and_starts_no_system_service() -> None:
    demo = packages("demo")
    assert {"php8.2-cli", "php8.2-fpm", "php8.2-opcache", "php-laravel-framework", "curl",
            "python3-venv", "ca-certificates"} <= demo
    assert not demo & (SERVERS - {"php8.2-fpm"})
    for script in ("run", "demo-setup"):
        text = (ROOT / "scripts" / script).read_text(encoding="utf-8")
        assert "start-services" not in text
        service = re.compile(r"^\s*(systemctl|service|invoke-rc\.d|start-stop-daemon)\s", re.MULTILINE)
        assert not service.search(text), f"scripts/{script} starts a system service"
    run = (ROOT / "scripts" / "run").read_text(encoding="utf-8")
    assert "install-deps\" demo" in run


def test_the_readme_names_exactly_the_packages_the_demo_installs() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    sentence = re.search(r"`scripts/run` installs only the Debian packages (.*?) \(", readme)
    assert sentence is not None, "the README says which Debian packages scripts/run installs"
    assert set(re.findall(r"`([^`]+)`", sentence.group(1))) == packages("demo")


def test_the_suite_installs_every_server_and_the_venv_profile_none() -> None:
    assert packages("all") >= SERVERS
    assert packages("venv") == set()


def test_package_metadata_uses_an_spdx_license_expression() -> None:
    # The {text = ...} table is deprecated by setuptools (an error from 2027-02-18); SPDX strings need 77+.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert pyproject["build-system"]["requires"] == ["setuptools>=77"]
