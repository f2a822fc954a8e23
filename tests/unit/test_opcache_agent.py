"""Composing agent scripts and reading their envelopes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from exporter.php.agent import Agent, AgentError, compose_script, parse_envelope
from exporter.php.endpoint import FpmEndpoint
from exporter.php.fastcgi import Response


def test_composed_script_embeds_only_the_tokens_hash() -> None:
    text = compose_script("status", "s3cret-token")
    assert text.startswith("<?php")
    assert text.count("<?php") == 1
    assert "s3cret-token" not in text
    assert hashlib.sha256(b"s3cret-token").hexdigest() in text
    assert "cachewarden_run(" in text


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown agent action"):
        compose_script("../../etc/passwd", "t")


def test_envelope_result_and_warnings() -> None:
    body = json.dumps({"ok": True, "result": {"a": 1}, "errors": ["careful"]}).encode()
    reply = parse_envelope("status", Response(200, {}, body))
    assert reply.result == {"a": 1}
    assert reply.warnings == ["careful"]


def test_failed_or_foreign_answers_raise() -> None:
    body = b'{"ok": false, "result": null, "errors": ["missing or wrong token"]}'
    with pytest.raises(AgentError, match="HTTP 403: missing or wrong token"):
        parse_envelope("status", Response(403, {}, body))
    with pytest.raises(AgentError, match="not a JSON answer; FPM stderr: PHP Parse error"):
        parse_envelope("status", Response(500, {}, b"<html>", b"PHP Parse error"))


async def test_a_missing_agent_dir_is_named_with_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    agent = Agent(FpmEndpoint("unix:/nonexistent.sock"), missing, timeout=1)
    expected = (rf"^agent_dir {missing}: cannot write agent script: No such file or directory; create it, "
                "writable by cachewarden, readable by FPM's user")
    with pytest.raises(AgentError, match=expected):
        await agent.run("status")
