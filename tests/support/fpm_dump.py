"""`php-fpm8.2 -tt` as an oracle: the effective configuration FPM itself reads from a layout.

`-tt` parses the configuration exactly as a starting FPM would (includes, prefix, `${NAME}` from the
environment it is given) and logs every pool's effective directives as NOTICE lines, then exits.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.phpfpm import require_fpm

_NOTICE = re.compile(r"^\[[^\]]*\] NOTICE: (.*)$")
_ENTRY = re.compile(r"^\t(\S+?)(?:\[(.*)\])? = (.*)$")


@dataclass
class DumpedPool:
    name: str
    directives: dict[str, str] = field(default_factory=dict)
    # php_value/php_admin_value lines in the order -tt prints them (reverse order of definition)
    ini_lines: list[tuple[str, str, str]] = field(default_factory=list)

    def effective_ini(self) -> dict[str, tuple[bool, str]]:
        """What a worker applies: php_values in printed order, then php_admin_values: the last wins."""
        out: dict[str, tuple[bool, str]] = {}
        for kind in ("php_value", "php_admin_value"):
            for k, key, value in self.ini_lines:
                if k == kind:
                    out[key] = (kind == "php_admin_value", value)
        return out


def fpm_dump(
    config: Path, *, prefix: Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, DumpedPool]:
    """Every pool FPM defines from `config`, by name, as `php-fpm8.2 -tt` prints it."""
    binary = require_fpm()
    command = [binary, "-n", "-tt", "-R", "-y", str(config)]
    if prefix is not None:
        command += ["-p", str(prefix)]
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    proc = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=30)
    output = proc.stderr + proc.stdout
    assert proc.returncode == 0, f"FPM refused {config}:\n{output}"
    assert "test is successful" in output, output
    messages: list[str] = []
    for line in output.splitlines():
        m = _NOTICE.match(line)
        # With error_log on stderr every line comes twice; no dump line repeats itself otherwise
        # except a duplicated php_value, whose effect a repeat does not change.
        if m and (not messages or messages[-1] != m.group(1)):
            messages.append(m.group(1))
    pools: dict[str, DumpedPool] = {}
    current: DumpedPool | None = None
    for message in messages:
        if message.startswith("[") and message.endswith("]"):
            name = message[1:-1]
            current = None if name == "global" else pools.setdefault(name, DumpedPool(name))
            continue
        m = _ENTRY.match(message)
        if current is None or m is None:
            continue
        key, offset, value = m.groups()
        if offset is not None and key in ("php_value", "php_admin_value"):
            current.ini_lines.append((key, offset, value))
        elif offset is None:
            current.directives[key] = value
    return pools
