"""What cachewarden derived from each Laravel app's `.env`, and what it could not, as metrics and checks.

    cachewarden_derived_target_info{target="shop",collector="redis",app="shop",source="/srv/shop/.env"} 1
    cachewarden_target_config_problems{target="shop",kind="redis"} 0

The targets are derived when the collectors are built (`exporter.discovery.discover`); this collector
publishes the derivation on every collection, so a problem stays visible for as long as it lasts: in
`check` (exit 1), on the status page and in `/metrics`. Laravel reads `.env` on every request (unless
its configuration is cached), so an edit takes effect in the app at once: each collection stats the
file (mtime, ctime, size, inode) and, when that changed, reads it again. A file phpdotenv can no longer
read is reported at once (`kind="dotenv"`), and so are the problems of the new values; targets that
now differ from the ones being watched are reported as a `dotenv` problem asking for a restart, since
the collectors themselves are built once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.collectors.base import Check, Collector, Observation, Verdict
from exporter.config import Config, DatabaseTarget, LaravelTarget, RedisTarget
from exporter.discovery import Derivation, Discovery, Outcome, discover
from exporter.laravel_env import read_app_dotenv
from exporter.laravel_paths import compiled_views, framework_version
from exporter.metrics import Samples, gauge, info

DERIVED_TARGET_INFO = info(
    "cachewarden_derived_target_info",
    "A target derived from a Laravel app's .env: its collector, the app and the .env file.",
    ("collector", "app", "source"),
)
CONFIG_PROBLEMS = gauge(
    "cachewarden_target_config_problems",
    "Targets a Laravel app's configuration implies that cannot be built or used as configured, by kind "
    "(dotenv: the .env itself cannot be read, or it changed since start and implies other targets, which "
    "needs a restart; views, redis, sql: that target); 0 when there are none.",
    ("kind",),
)
PROBLEM_KINDS = ("dotenv", "views", "redis", "sql")

_VERDICTS = {Outcome.DERIVED: Verdict.OK, Outcome.WATCHED: Verdict.OK, Outcome.NOT_WATCHED: Verdict.NOTE,
             Outcome.PROBLEM: Verdict.PROBLEM}


def _fingerprint(found: Discovery, app: str) -> tuple[Any, ...]:
    """What decides the app's targets: each derivation, and each derived target's URL and password."""
    hows = tuple((d.collector, d.outcome, d.target, d.summary, tuple(sorted(map(str, d.settings.items()))))
                 for d in found.derivations if d.app == app)
    targets: list[RedisTarget | DatabaseTarget] = [*found.redis, *found.databases]
    return hows, tuple((type(t).__name__, t.url, t.password()) for t in targets if t.laravel == app)


@dataclass(slots=True)
class DotenvWatch:
    """The app's `.env` as it was when the targets were derived, and how to tell that it changed."""

    config: Config
    app: str
    kinds: dict[str, bool]  # discover()'s redis, sql and views switches
    found: Discovery  # what the collectors were built from
    _signature: tuple[int, ...] | str | None = "unseen"
    _current: tuple[tuple[Derivation, ...], str | None, str | None] | None = field(default=None)

    @property
    def _target(self) -> LaravelTarget:
        return next(a for a in self.config.laravel if a.name == self.app)

    def current(self) -> tuple[tuple[Derivation, ...], str | None, str | None]:
        """(derivations, why the .env cannot be read, why a restart is needed) for the file as it is now."""
        app = self._target
        dotenv = app.root / ".env"
        signature = _stat(dotenv)
        if signature != self._signature or self._current is None:
            self._signature = signature
            self._current = self._reread(app, dotenv)
        return self._current

    def _reread(self, app: LaravelTarget, dotenv: Path
                ) -> tuple[tuple[Derivation, ...], str | None, str | None]:
        started = tuple(d for d in self.found.derivations if d.app == self.app)
        env, env_error = read_app_dotenv(dotenv)
        version = framework_version(app.root)
        if (env, env_error, None if version is None else str(version)) == (
                app.env, app.env_error, app.framework_version):
            return started, app.env_error, None
        update: dict[str, Any] = {"env": env, "env_error": env_error,
                                  "framework_version": None if version is None else str(version)}
        if "compiled_path" in app.derived_from:  # derived from the .env, not given in the configuration
            views = compiled_views(app.root, env, version, dotenv)
            update.update(compiled_path=views.path, derived_compiled_path=views.path,
                          derived_from={**app.derived_from, "compiled_path": views.origin})
        now = app.model_copy(update=update)
        config = self.config.model_copy(
            update={"laravel": [now if a.name == self.app else a for a in self.config.laravel]})
        found = discover(config, **self.kinds)
        derivations = tuple(d for d in found.derivations if d.app == self.app)
        if env_error is not None or _fingerprint(found, self.app) == _fingerprint(self.found, self.app):
            return derivations, env_error, None
        was = {d.collector: d.summary for d in started}
        changed = sorted({d.collector for d in derivations if was.get(d.collector) != d.summary}
                         | {c for c in was if c not in {d.collector for d in derivations}})
        what = ", ".join(changed) if changed else "credentials"
        return derivations, None, (f"{dotenv} changed since cachewarden started and now implies other "
                                   f"targets ({what}): restart cachewarden to watch the new targets")


def _stat(path: Path) -> tuple[int, ...] | str | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"error {exc.errno}"
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


class DiscoveryCollector(Collector):
    kind = "discovery"
    metrics = (DERIVED_TARGET_INFO, CONFIG_PROBLEMS)

    def __init__(self, app: str, derivations: Sequence[Derivation], *, env_error: str | None,
                 interval: float, timeout: float, watch: DotenvWatch | None = None) -> None:
        super().__init__(app, interval=interval, timeout=timeout)
        self._derivations = tuple(derivations)
        self._env_error = env_error
        self._watch = watch  # None: publish the derivation made at start, without looking at the file

    async def collect(self) -> Observation:
        samples = self.new_samples()
        problems = dict.fromkeys(PROBLEM_KINDS, 0)
        checks = []
        derivations, env_error, restart = self._derivations, self._env_error, None
        if self._watch is not None:
            derivations, env_error, restart = self._watch.current()
        if env_error:
            problems["dotenv"] += 1
            checks.append(Check(".env", Verdict.PROBLEM, env_error))
        if restart:
            problems["dotenv"] += 1
            checks.append(Check(".env changed", Verdict.PROBLEM, restart))
        for how in derivations:
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
        return Observation(samples, checks, {"derived": [d.as_dict() for d in derivations]})
