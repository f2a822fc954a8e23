"""Test servers run as child processes: stopping one, and failing at once when one has exited."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Ask `proc` to stop with `sig`; kill it if it has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def check_alive(proc: subprocess.Popen[bytes], log: Path, name: str | None = None) -> bool:
    """True while `proc` runs; once it has exited, a RuntimeError with the end of its log."""
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"{name or proc.args[0]} exited with {proc.returncode}:\n{tail}")
    return True
