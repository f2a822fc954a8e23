"""The query parameters of the `/heal` endpoints, read strictly.

`/heal` is a remote control: a parameter it does not understand must not be ignored, since ignoring it
turns the request into another one. `?dry-run=1` or `?dry_run=on`, read leniently, would run the
action for real; `?action=a&action=b`, reduced to its first value, runs something the caller did not
ask for alone. So every endpoint names the parameters it reads, and anything else is a 400 that names
the parameter: an unknown name (names are case-sensitive: `DRY_RUN` is unknown), a parameter given
twice, a switch with a value outside the documented spellings or with no value at all.

An action's arguments (`cache` of laravel.cache_rebuild, exporter.heal.names.PARAMETERS) are parameters
of the manual request too, taken only with an action that takes them and only with a value it allows:
`?action=views.recompile&cache=routes` is refused, not run without it.

Switches (`dry_run`, also spelled `dry-run` as the CLI's `--dry-run`) take `1`, `true`, `yes`, `on`
or `0`, `false`, `no`, `off`, in any case.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from multidict import MultiMapping

from exporter.heal.guards import Refusal
from exporter.heal.names import PARAMETERS
from exporter.text import display

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
ALIASES: Mapping[str, str] = {"dry-run": "dry_run"}
# Every action argument's name: a manual request may give them (`action_args` says which action takes which).
ACTION_ARGS: tuple[str, ...] = tuple(sorted({name for takes in PARAMETERS.values() for name in takes}))
_SHOWN = 64  # characters of a caller's parameter name or value echoed in an answer


def _shown(text: str) -> str:
    text = display(text)
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def read_query(query: MultiMapping[str], allowed: Collection[str]) -> dict[str, str]:
    """Each parameter of `query` by its name (aliases resolved), or a 400 Refusal naming the first
    unknown or repeated one. `allowed` is the endpoint's parameters; empty: it takes none."""
    out: dict[str, str] = {}
    for given, value in query.items():
        name = ALIASES.get(given, given)
        if name not in allowed:
            known = f"; this request takes {', '.join(sorted(allowed))}" if allowed else \
                "; this request takes none"
            raise Refusal(400, "bad_request", f"unknown query parameter {_shown(given)}{known}")
        if name in out:
            raise Refusal(400, "bad_request", f"query parameter {name!r} is given more than once")
        out[name] = value
    return out


def switch(params: Mapping[str, str], name: str) -> bool:
    """The switch `name` of `read_query`'s answer: False when absent, else its value, or a 400 Refusal."""
    if name not in params:
        return False
    value = params[name].lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise Refusal(400, "bad_request", f"query parameter {name!r} has the value {_shown(params[name])}: "
                  f"give one of {', '.join(sorted(TRUE))} or {', '.join(sorted(FALSE))}")


def action_args(params: Mapping[str, str], action: str) -> dict[str, str]:
    """The arguments for `action` among `read_query`'s answer, or a 400 Refusal naming one that the
    action does not take or whose value it does not allow."""
    takes = PARAMETERS.get(action, {})
    out: dict[str, str] = {}
    for name in ACTION_ARGS:
        if name not in params:
            continue
        if name not in takes:
            raise Refusal(400, "bad_request", f"query parameter {name!r} is not taken by the action "
                          f"{_shown(action)}" + (f"; it takes {', '.join(sorted(takes))}" if takes else ""))
        if params[name] not in takes[name]:
            raise Refusal(400, "bad_request", f"query parameter {name!r} has the value "
                          f"{_shown(params[name])}: give one of {', '.join(takes[name])}")
        out[name] = params[name]
    return out
