"""What the status page offers for a firing alert: its heal plan, whether it can run here, and the `curl`.

The command names where the token is read from, never the token: `$(cat FILE)` for heal.token_file,
`$VARIABLE` for heal.token_env. Every part taken from the configuration (target names, the token
file's path) is quoted for a POSIX shell, so that pasting the command runs exactly one request.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from urllib.parse import urlencode

from exporter.config import Config
from exporter.heal.names import ACTIONS
from exporter.heal.runner import HealRunner, targets_of
from exporter.heal.token import HealState

_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A server listening on every address is reached on the loopback address by whoever reads the page
# on its host; the page cannot know which of the host's names a caller elsewhere uses.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True, slots=True)
class HealOffer:
    """A plan for one alert on one target. `curl` is None when the plan cannot run (`why` says why)."""

    plan: str
    steps: tuple[str, ...]
    can_run: bool
    why: str
    curl: str | None


def server_url(listen: tuple[str, int], *, tls: bool = False) -> str:
    """`http(s)://HOST:PORT` for the address `serve` listens on (IPv6 in brackets, wildcards as loopback)."""
    host, port = listen
    host = _WILDCARDS.get(host, host)
    return f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"


def authorization_header(config: Config) -> str:
    """`-H "Authorization: Bearer …"` reading the token from where cachewarden reads it."""
    heal = config.heal
    if heal.token_file is not None:
        source = f"$(cat {shlex.quote(str(heal.token_file))})"
    elif _VARIABLE.match(heal.token_env):
        source = f"${{{heal.token_env}}}"
    else:  # not a name a shell expands: the reader substitutes it by hand
        source = "$TOKEN"
    return f'-H "Authorization: Bearer {source}"'


def heal_curl(config: Config, server: str, query: dict[str, str]) -> str:
    """The complete `curl` command for a manual POST /heal with `query` to `server` (a `server_url`)."""
    url = f"{server}/heal?{urlencode(query)}"
    return f"curl -sS -X POST {authorization_header(config)} {shlex.quote(url)}"


def feasibility(runner: HealRunner, state: HealState, plan: str, target: str) -> tuple[bool, str]:
    """Whether `plan` can run on `target`, and why not (or how it will run).

    What was decided at start: heal switched on with a usable token, a target of the section the plan's
    actions act on, and each step's verdict on that target (exporter.heal.feasibility, the verdicts
    `check` and GET /heal show). Locks and cooldowns are the run's own answer.
    """
    steps = runner.plans[plan].steps
    section = ACTIONS[steps[0]].section
    if target not in targets_of(runner.config, section):
        return False, f"its actions act on {section} targets, and there is none named {target}"
    if not state.enabled:
        return False, f"heal is {state.summary}"
    verdicts = [(step, runner.feasibility.blocked.get((step, target))) for step in steps]
    if all(blocked is not None for _, blocked in verdicts):
        return False, "; ".join(dict.fromkeys(b.why for _, b in verdicts if b is not None))
    how = ("heal.dry_run is set: the run only lists what it would do" if runner.config.heal.dry_run
           else "gentlest step first, re-measured after each")
    return True, "; ".join([how, *(f"{step} cannot: {b.why}" for step, b in verdicts if b is not None)])


def offer(runner: HealRunner, state: HealState, server: str, alert: str,
          target: str) -> HealOffer | None:
    """The heal plan of `alert` on `target`, or None when the alert has no plan. The command is
    POST /heal?target=T: the plans of whatever is wrong with T now, this one included, each verified."""
    plan = runner.plans.get(alert)
    if plan is None:
        return None
    can_run, why = feasibility(runner, state, alert, target)
    curl = heal_curl(runner.config, server, {"target": target}) if can_run else None
    return HealOffer(alert, tuple(plan.steps), can_run, why, curl)
