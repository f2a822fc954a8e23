"""Laravel's own `.env` reader as an oracle: Debian's vlucas/phpdotenv, run through the php CLI.

One php process reads a whole batch of files, so a differential test over hundreds of inputs takes a
fraction of a second per batch instead of a php start-up per file.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from exporter.laravel_env import DotenvError, decode_dotenv, parse_dotenv

SCRIPT = Path(__file__).with_name("phpdotenv.php")
AUTOLOAD = Path("/usr/share/php/Dotenv/autoload.php")


def phpdotenv_unavailable() -> str | None:
    if shutil.which("php") is None:
        return "php CLI not installed (Debian package php8.2-cli)"
    if not AUTOLOAD.is_file():
        return f"phpdotenv not installed (Debian package php-vlucas-phpdotenv): {AUTOLOAD}"
    return None


requires_phpdotenv = pytest.mark.skipif(phpdotenv_unavailable() is not None,
                                        reason=str(phpdotenv_unavailable()))


def _bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def phpdotenv(texts: Sequence[str | bytes]) -> list[dict[str, Any]]:
    """phpdotenv's reading of each file (text is written as UTF-8): {"values": [[name, value or None],
    ...]} or {"error": message}."""
    encoded = [base64.b64encode(_bytes(t)).decode("ascii") for t in texts]
    done = subprocess.run(["php", "-d", "display_errors=stderr", str(SCRIPT)], input=json.dumps(encoded),
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"phpdotenv.php failed ({done.returncode}): {done.stderr[-2000:]}")
    results: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(results) == len(texts)
    return results


def ours(text: str | bytes) -> dict[str, Any]:
    """cachewarden's reading of the file `text`, in the shape phpdotenv() gives."""
    try:
        values = parse_dotenv(decode_dotenv(_bytes(text)))
        return {"values": [[name, value] for name, value in values.items()]}
    except DotenvError as exc:
        return {"error": exc.message}


def mismatches(texts: Sequence[str | bytes]) -> list[str]:
    """Every input on which cachewarden and phpdotenv disagree, with both answers."""
    return [f"{text!r}:\n  phpdotenv:   {theirs}\n  cachewarden: {ours(text)}"
            for text, theirs in zip(texts, phpdotenv(texts), strict=True) if ours(text) != theirs]
