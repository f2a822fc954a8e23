"""Names from outside, shown everywhere: never a crash, never a raw control character.

A Laravel app whose file names are not UTF-8 (`\\xff.php`, a Latin-1 `café`) or hold a newline and a
terminal escape is watched by the real views collector; every place its findings are shown is checked:
the status page, `check` as text and as JSON under a strict UTF-8 or ASCII stdout, the metric labels,
log lines, audit lines, the /heal answer and the heal command's text.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from exporter.app import SCHEDULER, create_app
from exporter.heal.audit import Audit, HealMetrics
from exporter.heal.command import run_as_text
from exporter.heal.runs import Run, StepRecord
from exporter.metrics import Samples, SnapshotCollector, gauge
from exporter.text import OneLineMessages, display, json_safe, unicode_safe
from tests.support.healing import AUTH, heal_config, make_app_dir, token_file

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
ROOT = Path(__file__).resolve().parents[2]

LATIN1_SOURCE = b"caf\xe9.blade.php"  # a view saved by an editor in Latin-1
UNDECODABLE = b"\xff.php"  # a compiled file whose name is not UTF-8
TERMINAL = b"evil\n\x1b[2J.php"  # a newline and "clear the screen"
RAW_CONTROLS = ("\x1b", "\n\x1b")


def hostile_app(root: Path) -> Path:
    """Two orphaned compiled views with hostile names and an uncompiled Latin-1 source."""
    make_app_dir(root)
    compiled, views = os.fsencode(root / "storage/framework/views"), os.fsencode(root / "resources/views")
    with open(os.path.join(views, LATIN1_SOURCE), "w") as f:
        f.write("<p>x</p>")
    for name, source in ((UNDECODABLE, "gone\x1b[31m.blade.php"), (TERMINAL, "gone2.blade.php")):
        with open(os.path.join(compiled, name), "w") as f:
            f.write(f"<?php /**PATH {root}/resources/views/{source} ENDPATH**/ ?>")
    return root


def assert_shown_safely(text: str) -> None:
    text.encode("utf-8")  # strict: no lone surrogate left
    assert "\x1b" not in text
    assert "\\xff.php" in text
    assert "caf\\xe9.blade.php" in text


@given(st.binary(min_size=1, max_size=40))
def test_any_file_name_is_shown_as_one_printable_line_and_labelled_encodably(name: bytes) -> None:
    decoded = os.fsdecode(name)
    shown = display(decoded)
    shown.encode("utf-8")
    assert shown.isprintable()
    unicode_safe(decoded).encode("utf-8")
    # Readable bytes stay themselves: only what cannot be shown is escaped.
    if name.isascii() and decoded.isprintable():
        assert shown == decoded


def test_control_and_reordering_characters_are_escaped_for_people_only() -> None:
    assert display("a\nb\tc\x1b[31m\x7f\x85\u202eZ") == "a\\nb\\tc\\x1b[31m\\x7f\\x85\\u202eZ"
    assert unicode_safe("SELECT *\nFROM t") == "SELECT *\nFROM t"  # a label keeps the statement's lines
    assert display(os.fsdecode(b"caf\xc3\xa9 \xe9")) == "café \\xe9"
    assert unicode_safe("\ud800") == "\\ud800"  # a lone surrogate that no byte stands for
    assert json_safe({os.fsdecode(b"\xfe"): [os.fsdecode(b"\xff"), 1, None]}) == {
        "\\xfe": ["\\xff", 1, None], "\\xfe_bytes_hex": ["ff", None, None]}


def test_in_json_a_name_holding_a_byte_0xff_and_one_holding_a_backslash_are_told_apart() -> None:
    # Both render as the text `\xff.php`; only the undecodable one carries its bytes beside it.
    undecodable, backslash = os.fsdecode(b"\xff.php"), "\\xff.php"
    one, other = json_safe({"path": undecodable}), json_safe({"path": backslash})
    assert one == {"path": "\\xff.php", "path_bytes_hex": "ff2e706870"}
    assert other == {"path": "\\xff.php"}
    mixed = json_safe({"removed": [backslash, undecodable, "café.php"]})
    assert mixed["removed_bytes_hex"] == [None, "ff2e706870", None]
    assert bytes.fromhex(mixed["removed_bytes_hex"][1]) == b"\xff.php"
    assert json.loads(json.dumps(mixed, ensure_ascii=False).encode("utf-8")) == mixed
    assert json_safe({"x": "\ud800"}) == {"x": "\\ud800"}  # no byte stands for it: no bytes field


async def test_the_status_page_shows_hostile_file_names_escaped_instead_of_answering_500(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = hostile_app(tmp_path / "shop")
    client = await aiohttp_client(create_app(heal_config(root, None), run_collectors=False))
    await client.server.app[SCHEDULER].collect_all()  # type: ignore[union-attr]
    resp = await client.get("/")
    html = await resp.text()
    assert resp.status == 200
    assert_shown_safely(html)
    assert "evil\\n\\x1b[2J.php" in html


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "utf-8:strict"},
                                 {"LC_ALL": "C", "PYTHONIOENCODING": "ascii:strict"}])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_check_prints_hostile_file_names_escaped_on_a_strict_stdout(tmp_path: Path, env: dict[str, str],
                                                                    fmt: str) -> None:
    root = hostile_app(tmp_path / "shop")
    config = tmp_path / "cachewarden.yaml"
    config.write_text(f"laravel:\n  - name: shop\n    root: {root}\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check", "--config.file", str(config), "--format", fmt],
        capture_output=True, env={**os.environ, **env}, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 1, result.stderr.decode(errors="replace")  # orphans are a problem
    assert b"Traceback" not in result.stderr
    out = result.stdout.decode("utf-8")
    if fmt == "json":
        listed = [i for t in json.loads(out)["targets"] for c in t["checks"] for i in c["items"]]
        assert any(i.endswith("/evil\n\x1b[2J.php") for i in listed)  # JSON escapes it; parsed, it is data
        out = "\n".join(listed).replace("\n\x1b[2J", "")
    else:
        assert "evil\\n\\x1b[2J.php" in out
    assert_shown_safely(out)


def test_metric_labels_from_outside_are_exposed_encodably() -> None:
    spec = gauge("cachewarden_test_value", "A test series.", ("source",))
    samples = Samples(os.fsdecode(b"shop\xff"))
    samples.add(spec, 1.0, source=os.fsdecode(b"/etc/php/\xe9.ini"))

    class Source:
        def snapshot(self) -> list[Samples]:
            return [samples]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(Source()))
    text = generate_latest(registry).decode("utf-8")
    assert 'cachewarden_test_value{source="/etc/php/\\\\xe9.ini",target="shop\\\\xff"} 1.0' in text
    assert samples.value(spec, source=os.fsdecode(b"/etc/php/\xe9.ini")) == 1.0


def test_a_log_message_with_a_hostile_name_stays_one_escaped_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(OneLineMessages())
    logger = logging.getLogger("exporter.test_text_sinks")
    logger.addHandler(handler)
    try:
        logger.warning("collector %s failed: %s", "views/shop", os.fsdecode(b"cannot read " + TERMINAL))
        logger.warning("a 100%% literal percent sign and %s", os.fsdecode(UNDECODABLE))
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines == ["collector views/shop failed: cannot read evil\\n\\x1b[2J.php",
                     "a 100% literal percent sign and \\xff.php"]


async def test_an_audit_line_with_a_hostile_name_is_one_valid_json_document(
        capsys: pytest.CaptureFixture[str]) -> None:
    audit = Audit(HealMetrics({}, {}))
    await audit.event("heal_run", {"removed": [os.fsdecode(TERMINAL), os.fsdecode(UNDECODABLE)]})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["removed"] == ["evil\n\x1b[2J.php", "\\xff.php"]
    assert json.loads(lines[0])["removed_bytes_hex"] == [None, UNDECODABLE.hex()]
    assert "\x1b" not in lines[0]


async def test_a_heal_answer_listing_hostile_file_names_is_valid_json(
        tmp_path: Path, aiohttp_client: MakeClient) -> None:
    root = hostile_app(tmp_path / "shop")
    client = await aiohttp_client(create_app(heal_config(root, token_file(tmp_path)), run_collectors=False))
    resp = await client.post("/heal?action=views.remove_orphans&target=shop&dry_run=1", headers=AUTH)
    body = await resp.text()
    assert resp.status == 200, body
    run: dict[str, Any] = json.loads(body)["run"]
    shown = json.dumps(run, ensure_ascii=False)
    shown.encode("utf-8")
    assert "\\\\xff.php" in shown  # the JSON text of the string `\xff.php`


def test_the_heal_commands_text_escapes_hostile_names() -> None:
    from exporter.heal.actions.base import ActionOutcome

    run = Run(target="shop", steps=["views.remove_orphans"], dry_run=False, requested_by="cli")
    run.result = "verified"
    run.records.append(StepRecord("views.remove_orphans", "verified", outcome=ActionOutcome(
        done=[f"removed {os.fsdecode(TERMINAL)}", f"removed {os.fsdecode(UNDECODABLE)}"])))
    text = run_as_text(run)
    text.encode("utf-8")
    assert "removed evil\\n\\x1b[2J.php" in text
    assert "removed \\xff.php" in text
    assert "\x1b" not in text


def test_a_configuration_problem_quoting_a_hostile_path_is_printed_escaped(tmp_path: Path) -> None:
    # VIEW_COMPILED_PATH comes from the app's .env, which the app's user writes.
    root = make_app_dir(tmp_path / "shop")
    (root / ".env").write_text("VIEW_COMPILED_PATH=/srv/gone\x1b[2J\u202e\n", encoding="utf-8")
    config = tmp_path / "cachewarden.yaml"
    config.write_text(f"laravel:\n  - name: shop\n    root: {root}\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check", "--config.file", str(config)],
        capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, cwd=ROOT, timeout=60,
        check=False)
    err = result.stderr.decode("utf-8")
    assert result.returncode == 2, err
    assert "/srv/gone\\x1b[2J\\u202e" in err
    assert "\x1b" not in err
    assert "Traceback" not in err
