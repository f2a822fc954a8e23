"""What every heal action is: a name, the target it acts on, and a `run` that can also only describe.

An action acts on one configured target, named exactly. In a dry run it lists precisely the operations
it would perform, computed the same way as a real run, and changes nothing.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from exporter.collectors.base import Observation
from exporter.config import Config, LaravelTarget, PhpFpmTarget
from exporter.heal.names import ACTIONS
from exporter.heal.phpexec import PhpExecutor

if TYPE_CHECKING:
    from exporter.heal.actions.safety import CompiledRoots

# How many operations a run record lists; the counts are always complete.
LIST_CAP = 200


@dataclass(slots=True)
class ActionOutcome:
    """What a step did (or would do), what it deliberately left alone, and what went wrong."""

    done: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # caveats about what was done, not failures

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.done[:LIST_CAP], "done_total": len(self.done),
            "refused": self.refused[:LIST_CAP], "refused_total": len(self.refused),
            "errors": self.errors[:LIST_CAP], "errors_total": len(self.errors),
            "notes": self.notes,
        }


class ActionError(Exception):
    """The action could not run at all (missing configuration, PHP unreachable, …)."""


class NeedsRestart(ActionError):
    """Only a restart of PHP-FPM can fix this, and cachewarden has no way configured to do it."""


@dataclass(frozen=True, slots=True)
class ActionContext:
    config: Config
    php: PhpExecutor
    compiled: CompiledRoots  # the compiled-view directories as resolved at start


class Action(abc.ABC):
    name: ClassVar[str]

    def __init__(self, ctx: ActionContext) -> None:
        self.ctx = ctx

    @property
    def section(self) -> str:
        return ACTIONS[self.name].section

    @property
    def measures(self) -> str | None:
        return ACTIONS[self.name].measures

    def can_clear(self, target: str, observation: Observation | None) -> frozenset[str]:
        """The metrics this action can bring down on `target` as measured (default: what it declares)."""
        return ACTIONS[self.name].clears

    def laravel(self, target: str) -> LaravelTarget:
        for t in self.ctx.config.laravel:
            if t.name == target:
                return t
        raise ActionError(f"no laravel target named {target!r}")

    def php_fpm(self, target: str) -> PhpFpmTarget:
        for t in self.ctx.config.php_fpm:
            if t.name == target:
                return t
        raise ActionError(f"no php_fpm target named {target!r}")

    @abc.abstractmethod
    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        """Act on `target` using the findings of a fresh `observation`; in a dry run, only list."""

    async def run_with(self, target: str, observation: Observation | None, dry_run: bool,
                       args: Mapping[str, str]) -> ActionOutcome:
        """`run` with the arguments of the request, already checked against names.PARAMETERS (an action
        that takes none is given none)."""
        return await self.run(target, observation, dry_run)

    def explicit(self, args: Mapping[str, str]) -> bool:
        """Whether `args` name the work to do whatever the measurement found: a manual run then acts on
        a healthy target too, and is verified after it (e.g. laravel.cache_rebuild cache=routes)."""
        return False
