"""Whether each heal action and plan can run on each target, decided from the configuration at start.

A plan that cannot run must show when cachewarden starts, not when its alert fires at 3 a.m. Each
(action, target) gets a verdict: runnable, or why not. A reason is a *problem* (reported by `check` and
logged by `serve`) when the configuration can fix it and a plan needs it; it is a *note* when the
answer is by design (no `restart_command`: fpm.reload answers needs_restart) or no plan uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.config import Config, HealPlan
from exporter.heal.names import ACTIONS


@dataclass(frozen=True, slots=True)
class Blocked:
    why: str
    problem: bool  # True: a configuration fault worth failing `check` for


def _blocked(config: Config, action: str, target: str) -> Blocked | None:
    if action == "views.recompile":
        linked = any(p.laravel == target for p in config.php_fpm)
        if not linked and config.heal.php_cli is None:
            return Blocked(f"no PHP to compile the views of {target!r} with: no php_fpm target is linked "
                           "to it (php_fpm[].laravel) and heal.php_cli is not set", problem=True)
    elif action == "laravel.cache_rebuild" and config.heal.php_cli is None:
        app = next(t for t in config.laravel if t.name == target)
        # A problem only for an app artisan can rebuild: without it there is nothing to rebuild with.
        return Blocked(f"artisan needs the php CLI to rebuild the bootstrap caches of {target!r}: set "
                       "heal.php_cli", problem=(app.root / "artisan").is_file())
    elif action == "fpm.reload":
        pool = next(p for p in config.php_fpm if p.name == target)
        if pool.restart_command is None:
            return Blocked(f"php_fpm[{target}].restart_command is not set: a run answers needs_restart",
                           problem=False)
    elif action == "cache.warm" and not any(w.target == target and (w.commands or w.urls)
                                            for w in config.heal.warm):
        return Blocked(f"heal.warm has no commands or URLs for {target!r}", problem=False)
    return None


@dataclass(frozen=True, slots=True)
class Feasibility:
    """`blocked[(action, target)]` for every (action, target) that cannot run; the rest can."""

    blocked: Mapping[tuple[str, str], Blocked]
    problems: tuple[str, ...]  # plans that cannot run on a target, by a configuration fault
    notes: tuple[str, ...]  # how pools were linked, and plans that stop by design

    def target_verdicts(self, action: str, targets: list[str]) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for t in targets:
            b = self.blocked.get((action, t))
            out[t] = {"runnable": True} if b is None else {"runnable": False, "why": b.why}
        return out


def judge(config: Config, plans: Mapping[str, HealPlan], enabled: bool) -> Feasibility:
    """Every (action, target) verdict, and which plans on which targets can run none of their steps;
    with the heal off (`enabled` False: heal.enabled or no token) no plan runs, so none is judged."""
    blocked: dict[tuple[str, str], Blocked] = {}
    for action, info in ACTIONS.items():
        for t in getattr(config, info.section):
            b = _blocked(config, action, t.name)
            if b is not None:
                blocked[(action, t.name)] = b
    problems, notes = [], []
    notes += [f"php_fpm[{p.name}] is linked to laravel[{p.laravel}]: {p.linked_because}"
              for p in config.php_fpm if p.linked_because]
    for name, plan in sorted(plans.items()) if enabled else ():
        for t in getattr(config, ACTIONS[plan.steps[0]].section):
            reasons = [blocked[(s, t.name)] for s in plan.steps if (s, t.name) in blocked]
            if len(reasons) < len(plan.steps):
                continue  # some step can run
            text = f"heal plan {name} cannot run on {t.name!r}: " + "; ".join(r.why for r in reasons)
            if any(r.problem for r in reasons):
                problems.append(text)
            else:
                notes.append(text)
    return Feasibility(blocked, tuple(problems), tuple(notes))
