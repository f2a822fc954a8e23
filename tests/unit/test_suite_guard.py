"""The suite's guard: with CACHEWARDEN_REQUIRE_INTEGRATION=1 a skipped integration test is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = '''
import pytest

@pytest.fixture
def server():
    pytest.skip("example-server is not installed")

@pytest.mark.integration
def test_needs_a_server(server):
    pass

def test_unit_skip():
    pytest.skip("not relevant here")
'''


def run_sample(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                                         "markers =\n    integration: real servers\n",
                                         encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CACHEWARDEN_REQUIRE_INTEGRATION"}
    env["PYTHONPATH"] = str(ROOT)
    if require is not None:
        env["CACHEWARDEN_REQUIRE_INTEGRATION"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-rA",
         "--strict-markers", "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
        capture_output=True, text=True, check=False, cwd=tmp_path, env=env, timeout=60,
    )


@pytest.mark.parametrize("require", [None, "0"])
def test_integration_skips_are_allowed_by_default(tmp_path: Path, require: str | None) -> None:
    result = run_sample(tmp_path, require)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout


def test_integration_skip_fails_when_the_real_components_are_required(tmp_path: Path) -> None:
    result = run_sample(tmp_path, "1")
    assert result.returncode == 1, result.stdout + result.stderr
    # The skip came from a fixture, so pytest counts the failure as an error in setup.
    assert "1 skipped, 1 error" in result.stdout
    assert "CACHEWARDEN_REQUIRE_INTEGRATION=1 requires the real components" in result.stdout
    assert "example-server is not installed" in result.stdout
