"""`POST /deploy` and `GET /deploy`, for pipelines that cannot reach the host's FPM socket themselves.

The same guards as `/heal`, read once at start (exporter.heal.routes.HealGuard): bearer token in
constant time, address allowlist, heal.enabled. Only the query string is read, never a body. Commands
are never taken over HTTP: `--switch-command` and `--rollback-command` exist on the command line only,
so a holder of the token cannot make the sidecar run anything the configuration does not name. The
release folder must be the app root or a release beside it (exporter.deploy.release).

    POST /deploy?target=shop&release=/srv/shop/releases/42[&previous_release=…][&phases=activate,verify]
                [&dry_run=1][&timeout=60]

Answers: 200 with the run when verified, done or a dry run; 409 with the run when it was not verified,
failed or another deploy of the app holds its lock; 400 for an unknown app, phase or release;
401/403 as `/heal`; 503 when the lock store is unreachable.
"""

from __future__ import annotations

import logging
import math

from aiohttp import web

from exporter.config import Config
from exporter.deploy.phases import BadRequest, Deployer, DeployRequest
from exporter.deploy.records import PHASES, DeployMetrics
from exporter.heal import guards
from exporter.heal.routes import HEAL_GUARD, HEAL_RUNNER
from exporter.heal.runner import HealRunner
from exporter.heal.store import STORE_ERRORS

log = logging.getLogger(__name__)

DEPLOYER = web.AppKey("deployer", Deployer)
_TRUE = ("1", "true", "yes")
MAX_VERIFY_TIMEOUT = 600.0


def setup_deploy(app: web.Application, config: Config, runner: HealRunner) -> Deployer:
    """Register the /deploy routes (after setup_heal, whose guard, audit and locks they share)."""
    deployer = Deployer(runner, DeployMetrics([t.name for t in config.laravel]))
    app[DEPLOYER] = deployer
    app.router.add_post("/deploy", handle_post)
    app.router.add_get("/deploy", handle_list)
    return deployer


async def _refuse(request: web.Request, refusal: guards.Refusal) -> web.Response:
    # Logged as /heal's refusals are (rate-limited, never on the audit stream).
    request.app[HEAL_RUNNER].audit.refusal({"who": request.remote, "method": request.method,
                                           "path": "/deploy", "outcome": refusal.outcome,
                                           "status": refusal.status})
    return refusal.response()


PARAMETERS = frozenset({"target", "release", "previous_release", "phases", "dry_run", "timeout"})


def _request(query: dict[str, str], who: str) -> DeployRequest:
    unknown = sorted(set(query) - PARAMETERS)
    if unknown:
        # A misspelt `dry_run` must not turn into a real deploy.
        raise BadRequest(f"unknown parameter(s) {unknown}; /deploy takes {', '.join(sorted(PARAMETERS))}")
    phases = tuple(p for p in query.get("phases", "prepare,activate,verify").split(",") if p)
    if "switch" in phases:
        raise BadRequest("phases: the switch is the pipeline's own over HTTP (switch commands are taken "
                         "from the command line only)")
    try:
        timeout = float(query.get("timeout", "60"))
    except ValueError:
        raise BadRequest(f"timeout={query['timeout']!r} is not a number of seconds") from None
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_VERIFY_TIMEOUT):
        raise BadRequest(f"timeout must be more than 0 and at most {MAX_VERIFY_TIMEOUT:g} seconds")
    return DeployRequest(query.get("target", ""), query.get("release") or None,
                         query.get("previous_release") or None, phases,
                         query.get("dry_run", "").lower() in _TRUE, verify_timeout=timeout, requested_by=who)


async def handle_post(request: web.Request) -> web.Response:
    refusal = request.app[HEAL_GUARD].check(request)
    if refusal is not None:
        return await _refuse(request, refusal)
    deployer = request.app[DEPLOYER]
    if not deployer.config.heal.enabled:
        return await _refuse(request, guards.Refusal(403, "disabled", "heal is disabled (heal.enabled)"))
    try:
        req = _request(dict(request.query), request.remote or "unknown")
        run = await deployer.run(req)
    except BadRequest as exc:
        return await _refuse(request, guards.Refusal(400, "bad_request", str(exc)))
    except STORE_ERRORS as exc:
        log.warning("heal coordination store unavailable: %s", type(exc).__name__)
        return await _refuse(request, guards.Refusal(503, "unavailable", "the heal coordination store "
                                                     "is unavailable; retry later"))
    status = 200 if run.succeeded else 409
    body = {"status": "finished" if status == 200 else "not_verified", "run": run.as_dict()}
    return web.json_response(body, status=status)


async def handle_list(request: web.Request) -> web.Response:
    refusal = request.app[HEAL_GUARD].check(request)
    if refusal is not None:
        return await _refuse(request, refusal)
    recent = request.app[DEPLOYER].metrics.recent
    return web.json_response({"phases": list(PHASES), "runs": [r.as_dict() for r in recent]})
