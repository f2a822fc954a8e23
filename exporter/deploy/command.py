"""`cachewarden deploy --target APP …`: the phases run from the pipeline on the host.

Exit status: 0 when verify met every condition (or the phases asked for ran without error, without
verify, or a dry run found nothing in its way), 1 with the unmet conditions named, 2 for a bad app,
release or phase. On a terminal, verify shows what it is still waiting for.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from exporter.config import Config
from exporter.deploy.phases import BadRequest, Deployer, DeployRequest
from exporter.deploy.records import DeployMetrics, DeployRun
from exporter.deploy.verify import Progress, Unmet
from exporter.heal.assembly import assemble_heal, running
from exporter.heal.store import STORE_ERRORS
from exporter.text import display

EXIT_OK, EXIT_FAILED, EXIT_BAD_ARGS = 0, 1, 2
SHOWN = 10  # operations listed per phase in the text output; --format json has them all (capped)


def run_as_text(run: DeployRun) -> str:
    """The deploy for a terminal: every name from outside through display() (see exporter.text)."""
    lines = [f"deploy {display(run.release)} to {display(run.target)}: {run.result}"
             + (" (dry run)" if run.dry_run else "")]
    if run.note:
        lines.append(f"  note: {display(run.note)}")
    for r in run.records:
        lines.append(f"  {r.phase}: {r.result} ({r.duration * 1000:.0f} ms)")
        out = r.outcome
        for label, items in (("", out.done), ("left alone: ", out.refused), ("error: ", out.errors),
                             ("note: ", out.notes)):
            lines.extend(f"    {label}{display(i)}" for i in items[:SHOWN])
            if len(items) > SHOWN:
                lines.append(f"    {label}… and {len(items) - SHOWN} more")
        lines.extend(f"    unmet: {display(u)}" for u in r.unmet)
    return "\n".join(lines) + "\n"


def terminal_progress(stream: TextIO) -> Progress | None:
    """A one-line, rewritten progress display when `stream` is a terminal, else None."""
    if not stream.isatty():
        return None

    def show(unmet: list[Unmet], left: float) -> None:
        if unmet:
            text = f"verify: {left:4.0f}s left, waiting for {len(unmet)}: " + "; ".join(map(str, unmet))
        else:
            text = "verify: every condition met"
        stream.write("\r\x1b[K" + display(text)[:200] + ("\n" if not unmet or left <= 0 else ""))
        stream.flush()

    return show


async def deploy_command(config: Config, switches: dict[str, bool], req: DeployRequest, fmt: str) -> int:
    from exporter.collectors import build_collectors
    from exporter.php.pools import FpmPools
    from exporter.scheduler import Scheduler

    pools = FpmPools(config.php_fpm)
    scheduler = Scheduler(build_collectors(config, switches, pools))
    # The heal, assembled as `serve` and `cachewarden heal` assemble it, gives a deploy the parts it
    # shares: PHP executor, audit (to the store's stream), locks.
    runner = assemble_heal(config, scheduler, pools, enabled=config.heal.enabled)
    deployer = Deployer(runner, DeployMetrics([t.name for t in config.laravel]))
    try:
        # On exit the lock release the store could not take at once gets a last chance, then it closes.
        async with running(runner, background=False):
            try:
                run = await deployer.run(req, terminal_progress(sys.stderr))
            except BadRequest as exc:
                print(f"cachewarden deploy: {exc}", file=sys.stderr)
                return EXIT_BAD_ARGS
            except STORE_ERRORS as exc:
                print(f"cachewarden deploy: the heal coordination store is unavailable "
                      f"({type(exc).__name__})", file=sys.stderr)
                return EXIT_FAILED
    finally:
        await scheduler.close()
    sys.stdout.write(json.dumps(run.as_dict(), indent=2) + "\n" if fmt == "json" else run_as_text(run))
    return EXIT_OK if run.succeeded else EXIT_FAILED
