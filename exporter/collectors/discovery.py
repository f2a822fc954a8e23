"""What cachewarden derived from each Laravel app's `.env`, and what it could not, as metrics and checks.

    cachewarden_derived_target_info{target="shop",collector="redis",app="shop",source="/srv/shop/.env"} 1
    cachewarden_target_config_problems{target="shop",kind="redis"} 0

The derivation itself runs once, when the collectors are built (`exporter.discovery.discover`); this
collector publishes its result on every collection, so a problem stays visible for as long as the
process runs with it: in `check` (exit 1), on the status page and in `/metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.collectors.base import Check, Collector, Observation, Verdict
from exporter.discovery import Derivation, Outcome
from exporter.metrics import Samples, gauge, info

DERIVED_TARGET_INFO = info(
    "cachewarden_derived_target_info",
    "A target derived from a Laravel app's .env: its collector, the app and the .env file.",
    ("collector", "app", "source"),
)
CONFIG_PROBLEMS = gauge(
    "cachewarden_target_config_problems",
    "Targets a Laravel app's configuration implies that cannot be built or used as configured, by kind "
    "(dotenv: the .env itself cannot be read; views, redis, sql: that target); 0 when there are none.",
    ("kind",),
)
PROBLEM_KINDS = ("dotenv", "views", "redis", "sql")

_VERDICTS = {Outcome.DERIVED: Verdict.OK, Outcome.WATCHED: Verdict.OK, Outcome.NOT_WATCHED: Verdict.NOTE,
             Outcome.PROBLEM: Verdict.PROBLEM}


class DiscoveryCollector(Collector):
    kind = "discovery"
    metrics = (DERIVED_TARGET_INFO, CONFIG_PROBLEMS)

    def __init__(self, app: str, derivations: Sequence[Derivation], *, env_error: str | None,
                 interval: float, timeout: float) -> None:
        super().__init__(app, interval=interval, timeout=timeout)
        self._derivations = tuple(derivations)
        self._env_error = env_error

    async def collect(self) -> Observation:
        samples = self.new_samples()
        problems = dict.fromkeys(PROBLEM_KINDS, 0)
        checks = []
        if self._env_error:
            problems["dotenv"] += 1
            checks.append(Check(".env", Verdict.PROBLEM, self._env_error))
        for how in self._derivations:
            if how.outcome is Outcome.PROBLEM:
                problems[how.collector] += 1
            name = f"{how.collector} target" if how.target is None else f"{how.collector}/{how.target}"
            checks.append(Check(name, _VERDICTS[how.outcome], how.summary))
            # Only what the .env decided: a compiled path from the default layout or from
            # cachewarden's own configuration reads no variable.
            if how.target is not None and how.variables and how.outcome in (Outcome.DERIVED, Outcome.PROBLEM):
                # The info series carries the derived target's name as its `target` label.
                derived = Samples(how.target)
                derived.add_info(DERIVED_TARGET_INFO, collector=how.collector, app=how.app, source=how.source)
                samples.values.extend(derived.values)
        for kind, count in problems.items():
            samples.add(CONFIG_PROBLEMS, count, kind=kind)
        return Observation(samples, checks, {"derived": [d.as_dict() for d in self._derivations]})
