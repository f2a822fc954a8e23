"""The `/heal` endpoints and the heal's lifecycle inside the aiohttp app.

Status codes are chosen for Alertmanager, which retries a 5xx with backoff and not a 4xx: 2xx for
everything it should not resend now (accepted, duplicate, resolved, skipped because of a lock, a
cooldown, a disabled heal or no configured token), 4xx for requests that will never succeed as sent
(no or wrong token 401, address 403, a manual call with no configured token 403, 413, 415, bad payload
400/422), 5xx only when the coordination store is unreachable, a failure worth a retry.

A manual run answers with its result, so that `curl --fail` tells the truth: 200 when it was verified,
found nothing to fix or was a dry run; 409 when it was not run (lock, cooldown); 422 when it ran and
failed or could not verify its fix, or could not fix what was measured (needs_restart, not_clearable).
Not 5xx: running the same action again at once would not help (a step that changed something now cools
down), and a client that retries 5xx must not loop on it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from exporter.config import Config
from exporter.heal import guards
from exporter.heal.assembly import assemble_heal, log_feasibility, running
from exporter.heal.names import ACTIONS, PARAMETERS
from exporter.heal.query import ACTION_ARGS, action_args, read_query, switch
from exporter.heal.runner import HealRunner, NotRun, Rejected, targets_of
from exporter.heal.store import STORE_ERRORS, Store
from exporter.heal.token import HealState
from exporter.heal.webhook import PayloadError, parse_payload
from exporter.php.pools import FpmPools
from exporter.scheduler import Scheduler

log = logging.getLogger(__name__)

HEAL_RUNNER = web.AppKey("heal_runner", HealRunner)
_RUN_ID = re.compile(r"^[0-9a-f]{16}$")
NOT_RUN = ("locked", "cooldown", "ineffective")  # refusals of a manual run: 409
MANUAL_RUN_FAILED = 422  # a manual run that failed or could not verify its fix (see the docstring)
# The query parameters each request takes (exporter.heal.query): anything else is refused with 400.
MANUAL_PARAMS = ("action", "target", "dry_run", *ACTION_ARGS)
TARGET_PARAMS = ("target", "dry_run")  # no action: every plan the target needs now
NO_PARAMS: tuple[str, ...] = ()


class HealGuard:
    """The request-level guards with the secrets and networks read once at start-up."""

    def __init__(self, config: Config, state: HealState) -> None:
        heal = config.heal
        self.state = state
        self.token = state.token
        self.networks = guards.parse_networks(heal.allow_cidrs)
        self.max_body = heal.max_body_bytes
        self.body_timeout = config.web.read_body_timeout

    def check(self, request: web.Request) -> guards.Refusal | None:
        if self.token is None:
            # Not 503: nothing will change until someone configures a token, so nobody should retry.
            # Webhook deliveries get 200 (see handle_post), manual calls and listings 403.
            return guards.Refusal(403, "disabled", "heal is disabled: no token is configured "
                                  "(heal.token_file or the heal.token_env variable)")
        return (guards.check_address(request.remote, self.networks)
                or guards.check_token(request.headers.get("Authorization"), self.token))


HEAL_GUARD = web.AppKey("heal_guard", HealGuard)


def setup_heal(app: web.Application, config: Config, scheduler: Scheduler, pools: FpmPools,
               state: HealState, store: Store | None = None) -> HealRunner:
    """Register the /heal routes and the heal's cleanup context; returns the runner (a snapshot source)."""
    runner = assemble_heal(config, scheduler, pools, enabled=state.enabled, store=store)
    log_feasibility(runner)
    app[HEAL_RUNNER] = runner
    app[HEAL_GUARD] = HealGuard(config, state)
    app.router.add_post("/heal", handle_post)
    app.router.add_get("/heal", handle_list)
    app.router.add_get("/heal/runs/{run_id}", handle_run)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with running(runner, background=True):
            yield

    app.cleanup_ctx.append(lifecycle)
    return runner


async def _refuse(request: web.Request, refusal: guards.Refusal) -> web.Response:
    # Counted and logged (rate-limited), never put on the audit stream: see Audit.
    runner = request.app[HEAL_RUNNER]
    runner.metrics.requests[refusal.outcome] += 1
    runner.audit.refusal({"who": request.remote, "method": request.method,
                          "outcome": refusal.outcome, "status": refusal.status})
    return refusal.response()


async def handle_post(request: web.Request) -> web.Response:
    refusal = request.app[HEAL_GUARD].check(request)
    manual = bool({"action", "target"} & set(request.query))
    if refusal is not None and refusal.outcome == "disabled" and not manual:
        # A webhook delivery to a sidecar whose heal is off: 2xx, so Alertmanager neither retries nor
        # counts a failed notification; nothing is read or acted on.
        runner = request.app[HEAL_RUNNER]
        runner.metrics.requests["disabled"] += 1
        runner.audit.refusal({"who": request.remote, "method": request.method,
                              "outcome": "disabled", "status": 200})
        return web.json_response({"status": "ok", "outcome": "disabled", "error": refusal.message})
    if refusal is not None:
        return await _refuse(request, refusal)
    if "action" in request.query:
        return await _manual(request)
    if "target" in request.query:
        return await _manual_target(request)
    return await _webhook(request)


async def _webhook(request: web.Request) -> web.Response:
    runner = request.app[HEAL_RUNNER]
    started = time.monotonic()
    try:
        read_query(request.query, NO_PARAMS)  # e.g. a receiver URL ending in ?dry_run=1 runs nothing
        guard = request.app[HEAL_GUARD]
        data = await guards.read_json_body(request, guard.max_body, guard.body_timeout)
        alerts = parse_payload(data)
    except guards.Refusal as refusal:
        return await _refuse(request, refusal)
    except PayloadError as exc:
        invalid = guards.Refusal(422, "bad_request", f"not an Alertmanager v4 payload: {exc}")
        return await _refuse(request, invalid)
    who = request.remote or "unknown"
    decisions = []
    try:
        for alert in alerts:
            decisions.append(await runner.accept_alert(alert, who))
    except STORE_ERRORS as exc:
        # Typically Redis (heal.redis_url) unreachable: nothing was started, a retry may succeed.
        log.warning("heal coordination store unavailable: %s", type(exc).__name__)
        return await _refuse(request, guards.Refusal(503, "unavailable", "the heal coordination store "
                                                     "is unavailable; retry later"))
    runner.metrics.requests["accepted"] += 1
    body = {"status": "ok", "dry_run": runner.config.heal.dry_run,
            "decisions": [d.as_dict() for d in decisions]}
    await runner.audit.event("heal_request", {
        "who": who, "method": "POST", "outcome": "accepted", "status": 200,
        "alerts": [d.as_dict() for d in decisions],
        "duration_seconds": round(time.monotonic() - started, 6)})
    return web.json_response(body)


async def _manual(request: web.Request) -> web.Response:
    runner = request.app[HEAL_RUNNER]
    if not runner.config.heal.enabled:
        return await _refuse(request, guards.Refusal(403, "disabled", "heal is disabled (heal.enabled)"))
    try:
        q = read_query(request.query, MANUAL_PARAMS)
        dry_run = switch(q, "dry_run")
        args = action_args(q, q.get("action", ""))
    except guards.Refusal as refusal:
        return await _refuse(request, refusal)
    try:
        run = await runner.run_action(q.get("action", ""), q.get("target", ""), dry_run,
                                      request.remote or "unknown", args)
    except Rejected as exc:
        return await _refuse(request, guards.Refusal(400, "bad_request", str(exc)))
    except NotRun as exc:
        runner.metrics.requests["conflict"] += 1
        return web.json_response({"status": "not_run", "run": exc.run.as_dict()}, status=409)
    except STORE_ERRORS:
        return await _refuse(request, guards.Refusal(503, "unavailable", "the heal coordination store "
                                                     "is unavailable; retry later"))
    runner.metrics.requests["manual"] += 1
    return web.json_response({"status": "finished", "result": run.result, "run": run.as_dict()},
                             status=200 if run.succeeded else MANUAL_RUN_FAILED)


async def _manual_target(request: web.Request) -> web.Response:
    """`POST /heal?target=T`: the plans for whatever is wrong with T now, each verified. 200 when all
    were verified (or nothing was wrong, or a dry run); 409 when a run was refused (lock, cooldown,
    ineffective); 422 when one failed, could not verify, could not fix, or T could not be measured."""
    runner = request.app[HEAL_RUNNER]
    if not runner.config.heal.enabled:
        return await _refuse(request, guards.Refusal(403, "disabled", "heal is disabled (heal.enabled)"))
    try:
        if request.can_read_body:
            # An Alertmanager delivery to a receiver URL with ?target=: never a heal of everything.
            raise guards.Refusal(400, "bad_request", "a heal of a target takes no body (an Alertmanager "
                                 "delivery takes no query parameters)")
        q = read_query(request.query, TARGET_PARAMS)
        dry_run = switch(q, "dry_run")
    except guards.Refusal as refusal:
        return await _refuse(request, refusal)
    try:
        healed = await runner.heal_target(q.get("target", ""), dry_run, request.remote or "unknown")
    except Rejected as exc:
        return await _refuse(request, guards.Refusal(400, "bad_request", str(exc)))
    except STORE_ERRORS:
        return await _refuse(request, guards.Refusal(503, "unavailable", "the heal coordination store "
                                                     "is unavailable; retry later"))
    runner.metrics.requests["manual"] += 1
    status = 200 if healed.succeeded else 409 if healed.result in NOT_RUN else MANUAL_RUN_FAILED
    return web.json_response({"status": "finished", **healed.as_dict()}, status=status)


async def handle_list(request: web.Request) -> web.Response:
    refusal = request.app[HEAL_GUARD].check(request) or _no_query(request)
    if refusal is not None:
        return await _refuse(request, refusal)
    runner = request.app[HEAL_RUNNER]
    heal = runner.config.heal
    body: dict[str, Any] = {
        "enabled": heal.enabled,
        "dry_run": heal.dry_run,
        "state": request.app[HEAL_GUARD].state.as_dict(),
        "actions": {name: {"target_section": info.section, "measured_by": info.measures,
                           "targets": runner.feasibility.target_verdicts(
                               name, targets_of(runner.config, info.section)),
                           "parameters": PARAMETERS.get(name, {})}
                    for name, info in ACTIONS.items()},
        "problems": list(runner.feasibility.problems),
        "notes": list(runner.feasibility.notes),
        "plans": {name: plan.model_dump() for name, plan in sorted(runner.plans.items())},
        "runs": [r.as_dict() for r in runner.recent_runs()],
    }
    return web.json_response(body)


def _no_query(request: web.Request) -> guards.Refusal | None:
    try:
        read_query(request.query, NO_PARAMS)
    except guards.Refusal as refusal:
        return refusal
    return None


async def handle_run(request: web.Request) -> web.Response:
    refusal = request.app[HEAL_GUARD].check(request) or _no_query(request)
    if refusal is not None:
        return await _refuse(request, refusal)
    run_id = request.match_info["run_id"]
    run = request.app[HEAL_RUNNER].run(run_id) if _RUN_ID.match(run_id) else None
    if run is None:
        return web.json_response({"error": "no such run (only recent runs are kept)"}, status=404)
    return web.json_response(run.as_dict())
