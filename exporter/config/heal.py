"""The heal's configuration: the token and guards, the coordination store, plans (whose clear_when
metrics must be ones their measuring collector emits), warm commands and the views' owner.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Annotated, Self

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from exporter.config.values import (
    Account,
    CommandPath,
    ConfigPath,
    Duration,
    FileMode,
    HttpUrl,
    MetricName,
    StoreUrl,
    TargetName,
    _Model,
    _secret_file,
    read_secret,
)


class HealCondition(_Model):
    """A re-measured metric (summed over its series) that says the alert's cause is gone."""

    metric: MetricName
    # Only the series with these label values count, e.g. {cache: config} of a per-cache gauge.
    labels: dict[str, str] = {}
    max: float | None = None  # clear when the sum is at most this
    min: float | None = None  # clear when the sum is at least this

    @model_validator(mode="after")
    def _one_bound(self) -> Self:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of max or min")
        return self


class HealPlan(_Model):
    """The ordered steps (gentlest first) for one alertname, and when its condition counts as cleared."""

    steps: list[str] = Field(min_length=1, max_length=10)
    clear_when: list[HealCondition] = Field(min_length=1)
    # Arguments for the steps that take them (exporter.heal.names.PARAMETERS), e.g. {cache: routes}.
    args: dict[str, str] = {}

    @field_validator("steps")
    @classmethod
    def _known_actions(cls, v: list[str]) -> list[str]:
        from exporter.heal.names import ACTIONS

        unknown = [s for s in v if s not in ACTIONS]
        if unknown:
            raise ValueError(f"unknown action(s) {unknown}; known: {sorted(ACTIONS)}")
        if len({ACTIONS[s].section for s in v}) > 1:
            raise ValueError("every step of a plan must act on the same kind of target")
        return v

    @model_validator(mode="after")
    def _measured_metrics(self) -> Self:
        """Each condition's metric must be one the collector that re-measures the plan emits: a typo
        would otherwise load and never clear."""
        from exporter.collectors import emitted_metrics
        from exporter.heal.names import ACTIONS

        kind = ACTIONS[self.steps[0]].measures
        if kind is None:
            return self  # verified by the step's own result: no metric is read
        emitted = emitted_metrics(kind)
        errors = [InitErrorDetails(
            type=PydanticCustomError("value_error", "{why}", {"why": (
                f"the {kind} collector that re-measures {self.steps[0]} emits no metric {c.metric!r}"
                + (f"; did you mean {close[0]!r}?" if (close := get_close_matches(c.metric, emitted, 1, 0.9))
                   else ""))}),
            loc=("clear_when", i, "metric"), input=c.metric)
            for i, c in enumerate(self.clear_when) if c.metric not in emitted]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_validator(mode="after")
    def _args_taken(self) -> Self:
        from exporter.heal.names import PARAMETERS, check_args

        for name, value in self.args.items():
            takers = [s for s in self.steps if name in PARAMETERS.get(s, {})]
            if not takers:
                raise ValueError(f"no step of {self.steps} takes the argument {name!r}")
            for step in takers:
                check_args(step, {name: value})
        return self


class WarmCommand(_Model):
    argv: list[str] = Field(min_length=1)  # run without a shell
    cwd: ConfigPath | None = None
    timeout: Duration = 60.0
    # "user" or "user:group" to run as (cachewarden must then run as root): an artisan command run as
    # root writes root-owned caches that the app's own user can no longer rewrite.
    user: Account | None = None


class WarmUrl(_Model):
    url: HttpUrl
    timeout: Duration = 10.0


class HealWarm(_Model):
    """What `cache.warm` runs for one Laravel target."""

    target: TargetName
    commands: list[WarmCommand] = []
    urls: list[WarmUrl] = []


MIN_TOKEN_LENGTH = 16  # a guessable token would make /heal an open door


class HealConfig(_Model):
    enabled: bool = True
    # This host's `instance` label: alerts about another instance are left to that host's sidecar.
    instance: Annotated[str | None, Field(min_length=1, max_length=1024)] = None
    token_file: ConfigPath | None = None
    token_env: str = "CACHEWARDEN_HEAL_TOKEN"  # noqa: S105 - a variable name, not a secret
    dry_run: bool = False  # every run only lists what it would do
    allow_cidrs: list[str] = []  # e.g. 10.0.0.0/8; empty: any address that holds the token
    max_body_bytes: Annotated[int, Field(gt=0, le=16 << 20)] = 1 << 20
    # Shared lock, dedup and cooldown state, so that a fleet of sidecars heals once.
    redis_url: StoreUrl | None = None
    redis_password_file: ConfigPath | None = None
    redis_password_env: str | None = None
    dedup_ttl: Duration = 86400.0
    lock_ttl: Duration = 600.0  # a crashed sidecar's lock expires after this
    cooldown: Duration = 120.0  # per (action, target), after a step that changed something
    # This many runs of a plan within the window that did not clear its alert stop it from acting.
    ineffective_runs: Annotated[int, Field(ge=1)] = 3
    ineffective_window: Duration = 3600.0
    recent_runs: Annotated[int, Field(ge=1, le=10000)] = 200
    php_cli: CommandPath | None = None  # compile views with this `php` binary when no FPM pool serves the app
    views_owner: Account | None = None  # "user" or "user:group"
    views_mode: FileMode = 0o644  # directories get the same bits plus x wherever r is set
    warm: list[HealWarm] = []
    plans: dict[str, HealPlan] = {}  # by alertname; merged over the shipped defaults

    @field_validator("allow_cidrs")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        bad = []
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                bad.append(cidr)
        if bad:
            raise ValueError(f"not a network in CIDR notation: {bad}")
        return v

    _secret_readable = field_validator("token_file", "redis_password_file")(lambda cls, v: _secret_file(v))

    def redis_password(self) -> str | None:
        return read_secret(self.redis_password_file, self.redis_password_env)
