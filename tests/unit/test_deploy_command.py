"""The deploy command's output: a run for people and scripts, and verify's progress on a terminal only."""

from __future__ import annotations

import io

from exporter.deploy.command import run_as_text, terminal_progress
from exporter.deploy.records import DeployMetrics, DeployRun, PhaseRecord
from exporter.deploy.verify import Unmet
from exporter.metrics import Samples


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_on_a_terminal_and_rewritten_in_place() -> None:
    term = Terminal()
    show = terminal_progress(term)
    assert show is not None
    show([Unmet("code.revision", "FPM runs revision r1 but REVISION on disk says r2")], 12.0)
    show([], 11.5)
    out = term.getvalue()
    assert out.startswith("\r\x1b[Kverify:   12s left, waiting for 1: code.revision: FPM runs revision r1")
    assert out.endswith("\r\x1b[Kverify: every condition met\n")


def test_no_progress_when_stderr_is_a_pipe() -> None:
    assert terminal_progress(io.StringIO()) is None


def test_the_text_names_each_phase_and_what_is_unmet_and_escapes_names() -> None:
    run = DeployRun("shop", "/srv/shop/releases/\x1b[31m42", ["prepare", "verify"], False, "cli")
    prepare = PhaseRecord("prepare", duration=0.2)
    prepare.outcome.done.extend(f"compiled v{i}" for i in range(12))
    verify = PhaseRecord("verify", "unverified", 30.0, unmet=["cachewarden_views_stale: 1 compiled view(s)"])
    run.records += [prepare, verify]
    run.result = "unverified"
    text = run_as_text(run)
    assert "\x1b" not in text
    assert "  prepare: ok (200 ms)\n" in text
    assert "    … and 2 more\n" in text
    assert "  verify: unverified (30000 ms)\n    unmet: cachewarden_views_stale: 1 compiled view(s)\n" in text


def test_every_result_and_phase_is_exported_at_zero_until_a_deploy_counts() -> None:
    metrics = DeployMetrics(["shop"])
    [samples] = metrics.snapshot()
    assert isinstance(samples, Samples)
    assert len(samples.values) == 6 + 4
    run = DeployRun("shop", "/srv/shop", ["verify"], False, "cli", result="verified")
    run.records.append(PhaseRecord("verify", "verified", 1.5))
    metrics.record(run)
    [samples] = metrics.snapshot()
    from exporter.deploy.records import DEPLOY_PHASE_SECONDS, DEPLOY_RUNS
    assert samples.value(DEPLOY_RUNS, result="verified") == 1
    assert samples.value(DEPLOY_RUNS, result="failed") == 0
    assert samples.value(DEPLOY_PHASE_SECONDS, phase="verify") == 1.5
    assert list(metrics.recent) == [run]
