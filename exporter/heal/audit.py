"""The heal's audit trail: a JSON log line per request and per run, metrics, and a Redis stream.

The metrics reach `/metrics` through the same snapshot mechanism as the collectors: `HealMetrics` is a
snapshot source whose buffers the app's registry adapter merges in. Series that can be zero exist at
zero from the start, for every configured target and every known action, result, outcome and plan.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from exporter.metrics import Samples, counter, gauge
from exporter.ratelimited_log import RateLimitedLog
from exporter.text import json_safe

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)
audit_log = logging.getLogger("cachewarden.heal.audit")


class _JsonLineHandler(logging.Handler):
    """Writes the bare message: each audit line is one JSON document a log shipper can parse as is."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # sys.stderr looked up on every line, not bound once, so a redirected stderr is honoured.
            sys.stderr.write(record.getMessage() + "\n")
            sys.stderr.flush()
        except Exception:  # a broken stderr must not break a heal
            self.handleError(record)


def _setup_audit_log() -> None:
    if not any(isinstance(h, _JsonLineHandler) for h in audit_log.handlers):
        audit_log.addHandler(_JsonLineHandler())
    # Not through the root handler, whose prefix (time, level, name) would make the line not JSON.
    audit_log.propagate = False
    audit_log.setLevel(logging.INFO)

SELF_TARGET = "cachewarden"
STREAM = "cachewarden:heal:audit"
STREAM_MAXLEN = 10_000
REFUSAL_LOG_INTERVAL = 10.0  # seconds between two log lines of refused requests with one outcome

HEAL_RUNS = counter(
    "cachewarden_heal_runs_total",
    "Heal runs by final result (verified, unverified, failed, dry_run, already_healthy, cooldown, "
    "ineffective, needs_restart, not_clearable), once per run; action is the plan's first step or the "
    "manual action, target the healed target.",
    ("action", "result"),
)
HEAL_STEPS = counter(
    "cachewarden_heal_steps_total",
    "Steps of heal runs by action and result (verified, unverified, failed, dry_run, cooldown, skipped, "
    "needs_restart); "
    "target is the healed target.",
    ("action", "result"),
)
HEAL_REQUESTS = counter(
    "cachewarden_heal_requests_total", "Requests to /heal by outcome; target is always 'cachewarden'.",
    ("outcome",),
)
HEAL_ALERTS = counter(
    "cachewarden_heal_alerts_total",
    "Alerts received on /heal by what was decided for each; target is always 'cachewarden'.",
    ("decision",),
)
HEAL_DURATION = gauge(
    "cachewarden_heal_duration_seconds",
    "How long the last run of the action took on the target, re-measurement included.", ("action",),
)
HEAL_INEFFECTIVE = gauge(
    "cachewarden_heal_ineffective",
    "1 while the plan has run heal.ineffective_runs times within the window without clearing its "
    "alert and is no longer acted on.", ("plan",),
)

HEAL_STORE_FAILURES = counter(
    "cachewarden_heal_store_failures_total",
    "Operations on the heal store (heal.redis_url) that failed or timed out, by operation (admit, "
    "release, cooldown, account), retries included; target is always 'cachewarden'.",
    ("operation",),
)
HEAL_STORE_PENDING = gauge(
    "cachewarden_heal_store_pending_writes",
    "Writes to the heal store (lock and claim releases, cooldowns, plan accounting) waiting for it to "
    "answer again, retried in the background; target is always 'cachewarden'.",
)

RUN_RESULTS = ("verified", "unverified", "failed", "dry_run", "already_healthy", "cooldown", "ineffective",
               "needs_restart", "not_clearable")
STEP_RESULTS = ("verified", "unverified", "failed", "dry_run", "cooldown", "skipped", "needs_restart")
REQUEST_OUTCOMES = ("accepted", "manual", "unauthorized", "forbidden", "disabled", "bad_request",
                    "too_large", "unsupported_media_type", "conflict", "unavailable")
ALERT_DECISIONS = ("started", "duplicate", "resolved", "no_plan", "unknown_target", "other_instance",
                   "locked", "cooldown", "ineffective", "disabled")
STORE_OPERATIONS = ("admit", "release", "cooldown", "account")
HEAL_METRICS = (HEAL_RUNS, HEAL_STEPS, HEAL_REQUESTS, HEAL_ALERTS, HEAL_DURATION, HEAL_INEFFECTIVE,
                HEAL_STORE_FAILURES, HEAL_STORE_PENDING)


class HealMetrics:
    """Counters and gauges of the heal, exposed as snapshot buffers."""

    def __init__(self, action_targets: Mapping[str, Iterable[str]],
                 plan_targets: Mapping[str, Iterable[str]]) -> None:
        self.runs: Counter[tuple[str, str, str]] = Counter()  # (target, first action, run result)
        self.steps: Counter[tuple[str, str, str]] = Counter()  # (target, action, step result)
        self.requests: Counter[str] = Counter()
        self.alerts: Counter[str] = Counter()
        self.durations: dict[tuple[str, str], float] = {}
        self.ineffective: dict[tuple[str, str], bool] = {}
        self.store_failures: Counter[str] = Counter()  # by operation
        self.store_pending_writes: Callable[[], int] = lambda: 0
        for action, targets in action_targets.items():
            for t in targets:
                for result in RUN_RESULTS:
                    self.runs[(t, action, result)] += 0
                for result in STEP_RESULTS:
                    self.steps[(t, action, result)] += 0
                self.durations[(t, action)] = 0.0
        for plan, targets in plan_targets.items():
            for t in targets:
                self.ineffective[(t, plan)] = False

    def snapshot(self) -> list[Samples]:
        own = Samples(SELF_TARGET)
        for outcome in sorted(set(REQUEST_OUTCOMES) | set(self.requests)):
            own.add(HEAL_REQUESTS, self.requests[outcome], outcome=outcome)
        for decision in sorted(set(ALERT_DECISIONS) | set(self.alerts)):
            own.add(HEAL_ALERTS, self.alerts[decision], decision=decision)
        for operation in sorted(set(STORE_OPERATIONS) | set(self.store_failures)):
            own.add(HEAL_STORE_FAILURES, self.store_failures[operation], operation=operation)
        own.add(HEAL_STORE_PENDING, self.store_pending_writes())
        by_target: dict[str, Samples] = {}

        def buf(target: str) -> Samples:
            return by_target.setdefault(target, Samples(target))

        for (target, action, result), n in sorted(self.runs.items()):
            buf(target).add(HEAL_RUNS, n, action=action, result=result)
        for (target, action, result), n in sorted(self.steps.items()):
            buf(target).add(HEAL_STEPS, n, action=action, result=result)
        for (target, action), seconds in sorted(self.durations.items()):
            buf(target).add(HEAL_DURATION, seconds, action=action)
        for (target, plan), stuck in sorted(self.ineffective.items()):
            buf(target).add(HEAL_INEFFECTIVE, 1.0 if stuck else 0.0, plan=plan)
        return [own, *by_target.values()]


class Audit:
    """Writes runs and accepted requests to the log and the Redis stream, refusals to the log only.

    The stream is capped, so whatever a stranger can cause must not reach it: 12,000 requests without
    a token would otherwise push every run out of it within seconds. Refused requests are counted in
    `cachewarden_heal_requests_total{outcome}` (by the caller) and logged at most once per
    REFUSAL_LOG_INTERVAL per outcome, the line saying how many were left out.
    """

    def __init__(self, metrics: HealMetrics, redis: Redis | None = None, *, stream: str = STREAM,
                 maxlen: int = STREAM_MAXLEN) -> None:
        _setup_audit_log()
        self.metrics = metrics
        self._redis = redis
        self._stream = stream
        self._maxlen = maxlen
        self._stream_failing = False
        self._refusals = RateLimitedLog(audit_log, REFUSAL_LOG_INTERVAL)

    def refusal(self, fields: dict[str, Any]) -> None:
        """Log a refused request (`outcome` in fields) unless one with that outcome was logged lately."""
        left_out = self._refusals.admit(str(fields.get("outcome")))
        if left_out is None:
            return
        record = {"event": "heal_request", **fields}
        if left_out:
            record["left_out"] = left_out  # refusals with this outcome since the last line
        audit_log.info("%s", json.dumps(json_safe(record), default=str, sort_keys=True))

    async def recent_runs(self, count: int) -> list[tuple[float, dict[str, Any]]] | None:
        """The last `count` runs the stream recorded as finished or refused, by any sidecar or
        `cachewarden heal`, newest first: (when it was recorded, in epoch seconds; its fields).

        None without a stream, or when Redis does not answer within a second: what the stream holds
        is then unknown, which is not "no run". An entry that is not one of ours is skipped.
        """
        if self._redis is None:
            return None
        try:
            async with asyncio.timeout(1.0):
                # Each run writes heal_started too, and accepted deliveries a heal_request each.
                entries = await self._redis.xrevrange(self._stream, count=count * 4)
        except Exception as exc:
            log.debug("cannot read the Redis stream %s: %s", self._stream, type(exc).__name__)
            return None
        out: list[tuple[float, dict[str, Any]]] = []
        for entry_id, data in entries or ():
            raw = (data or {}).get(b"event")
            if entry_id is None or raw is None:
                continue
            try:
                record = json.loads(raw)
                # A stream entry's ID is the millisecond it was added, a dash, a sequence number.
                added = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
                            .partition("-")[0]) / 1000
            except (TypeError, ValueError):
                continue
            if isinstance(record, dict) and record.get("event") in ("heal_finished", "heal_refused"):
                out.append((added, record))
                if len(out) == count:
                    break
        return out

    async def event(self, kind: str, fields: dict[str, Any]) -> None:
        record = {"event": kind, **fields}
        line = json.dumps(json_safe(record), default=str, sort_keys=True)
        audit_log.info("%s", line)
        if self._redis is None:
            return
        try:
            async with asyncio.timeout(1.0):
                await self._redis.xadd(self._stream, {"event": line}, maxlen=self._maxlen, approximate=True)
            self._stream_failing = False
        except Exception as exc:  # the audit stream must never break a heal
            if not self._stream_failing:
                log.warning("cannot append to the Redis stream %s: %s", self._stream, type(exc).__name__)
            self._stream_failing = True
