"""The Alertmanager webhook payload (version 4): parsed, validated and reduced to what a heal needs.

Unknown keys are accepted (newer Alertmanager releases add `notification_reason`, `routeLabels`, …).
Every string is data: the alertname selects a configured plan by exact match, the `target` label a
configured target by exact match; nothing from the payload is ever used as a path, command or template.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_ALERTS = 1000
Short = Annotated[str, Field(max_length=1024)]
LabelMap = Annotated[dict[Annotated[str, Field(max_length=256)], Short], Field(max_length=128)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class AlertModel(_Lenient):
    status: Literal["firing", "resolved"]
    labels: LabelMap
    annotations: dict[str, Any] = {}
    startsAt: Short
    endsAt: Short = ""
    generatorURL: Annotated[str, Field(max_length=4096)] = ""
    fingerprint: Short = ""


class PayloadModel(_Lenient):
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: Short = ""
    groupKey: Annotated[str, Field(max_length=8192)] = ""
    alerts: Annotated[list[AlertModel], Field(max_length=MAX_ALERTS)]


@dataclass(frozen=True, slots=True)
class Alert:
    status: str
    alertname: str
    target: str | None
    fingerprint: str
    starts_at: str
    instance: str | None = None

    @property
    def firing(self) -> bool:
        return self.status == "firing"


class PayloadError(ValueError):
    """The body is not a usable Alertmanager v4 payload; `problems` name each reason (never echo input)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _fingerprint(labels: dict[str, str]) -> str:
    # Alertmanager always sends one; a hand-written payload may not, and its labels identify it as well.
    canonical = "\0".join(f"{k}\0{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_payload(data: Any) -> list[Alert]:
    """The alerts of a decoded JSON body, or PayloadError."""
    try:
        payload = PayloadModel.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{loc}: {err['msg']}")
        raise PayloadError(problems[:20]) from None
    return [
        Alert(
            status=a.status,
            alertname=a.labels.get("alertname", ""),
            target=a.labels.get("target"),
            fingerprint=a.fingerprint or _fingerprint(a.labels),
            starts_at=a.startsAt,
            instance=a.labels.get("instance"),
        )
        for a in payload.alerts
    ]
