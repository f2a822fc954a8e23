"""`cachewarden heal [ACTION] --target T [--cache C] [--dry-run]`: one action (or, without one, every plan
for what is wrong with T now), run locally through the same code path.

Locks and cooldowns are shared with running sidecars when heal.redis_url is set, and the run is audited
to the same Redis stream as theirs. Exit status: 0 when the run was verified (or was a dry run, or found
nothing to fix), 1 when it was not or could not run, 2 for an unknown action or target.
"""

from __future__ import annotations

import json
import sys

from exporter.config import Config
from exporter.heal.assembly import assemble_heal, running
from exporter.heal.runner import NotRun, Rejected, TargetHeal
from exporter.heal.runs import Run
from exporter.heal.store import STORE_ERRORS
from exporter.text import display

EXIT_OK, EXIT_FAILED, EXIT_BAD_ARGS = 0, 1, 2


def run_as_text(run: Run) -> str:
    """The run for a terminal: every name from outside through display() (see exporter.text)."""
    args = "".join(f" {display(k)}={display(v)}" for k, v in run.args.items())
    lines = [f"heal {' -> '.join(map(display, run.steps))}{args} on {display(run.target)}: {run.result}"
             + (" (dry run)" if run.dry_run else "")]
    if run.note:
        lines.append(f"  note: {display(run.note)}")
    for r in run.records:
        lines.append(f"  step {display(r.action)}: {r.result} ({r.duration * 1000:.0f} ms)")
        if r.error:
            lines.append(f"    error: {display(r.error)}")
        if r.outcome:
            lines.extend(f"    {display(d)}" for d in r.outcome.done)
            lines.extend(f"    left alone: {display(d)}" for d in r.outcome.refused)
            lines.extend(f"    error: {display(d)}" for d in r.outcome.errors)
        if r.unmet:
            lines.append(f"    still: {', '.join(map(display, r.unmet))}")
    return "\n".join(lines) + "\n"


def target_heal_as_text(healed: TargetHeal) -> str:
    unmeasured = "".join(f"{display(kind)}: not measured: {display(why)}\n"
                         for kind, why in healed.unmeasured.items())
    verdict = f"{display(healed.target)}: {healed.result}\n"
    return "".join(map(run_as_text, healed.runs)) + unmeasured + verdict


async def heal_command(config: Config, switches: dict[str, bool], action: str | None, target: str,
                       dry_run: bool, fmt: str, args: dict[str, str] | None = None) -> int:
    """One action on `target` with its arguments (`args`, names.PARAMETERS: one it does not take
    exits 2), or with `action` None every plan for what is wrong with it now."""
    from exporter.collectors import build_collectors
    from exporter.php.pools import FpmPools
    from exporter.scheduler import Scheduler

    pools = FpmPools(config.php_fpm)
    scheduler = Scheduler(build_collectors(config, switches, pools))
    # The same assembly as `serve`'s: the run is audited to the store's stream and shares its locks.
    runner = assemble_heal(config, scheduler, pools, enabled=config.heal.enabled)
    try:
        # On exit the cleanup the store could not take at once gets a last chance, then it closes.
        async with running(runner, background=False):
            try:
                if action is None:
                    if args:
                        raise Rejected(f"{', '.join(args)} is an argument of an action: name the action")
                    healed = await runner.heal_target(target, dry_run, "cli")
                    sys.stdout.write(json.dumps(healed.as_dict(), indent=2) + "\n" if fmt == "json"
                                     else target_heal_as_text(healed))
                    return EXIT_OK if healed.succeeded else EXIT_FAILED
                run = await runner.run_action(action, target, dry_run, "cli", args)
            except Rejected as exc:
                print(f"cachewarden heal: {exc}", file=sys.stderr)
                return EXIT_BAD_ARGS
            except NotRun as exc:
                run = exc.run
            except STORE_ERRORS as exc:
                print(f"cachewarden heal: the heal coordination store is unavailable ({type(exc).__name__})",
                      file=sys.stderr)
                return EXIT_FAILED
    finally:
        await scheduler.close()
    sys.stdout.write(json.dumps(run.as_dict(), indent=2) + "\n" if fmt == "json" else run_as_text(run))
    return EXIT_OK if run.succeeded else EXIT_FAILED
