"""docs/security.md names the test behind each guarantee: every one it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_security_page_names_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text))
    assert len(named) > 20
    missing = []
    for path, name in sorted(named):
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8")) if (ROOT / path).exists() else None
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)} \
            if tree else set()
        if name not in defined:
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_the_security_page_keeps_its_sections() -> None:
    headings = re.findall(r"^## (.+)$", (ROOT / "docs" / "security.md").read_text(encoding="utf-8"), re.M)
    for heading in ("Threat model", "Secrets and logs", "Files the heal writes", "Failing dependencies"):
        assert heading in headings
