"""The aiohttp application: `/metrics`, the status page `/` (and `/status.json`), `/healthz`.

Everything the app owns (its registry, its scheduler, the collectors' connections and the background
collection task) is created in `create_app` and opened/closed in `cleanup_ctx`, so tests build as many
independent apps as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.collectors import build_collectors
from exporter.collectors.base import Collector
from exporter.config import Config, split_listen_address
from exporter.deploy.routes import DEPLOYER, setup_deploy
from exporter.heal import advice
from exporter.heal.routes import HEAL_RUNNER, setup_heal
from exporter.heal.token import HealState, read_heal_state
from exporter.http_server import HTTP_ERRORS, HttpErrors
from exporter.metrics import SnapshotCollector
from exporter.php.pools import FpmPools
from exporter.report import build_report
from exporter.scheduler import Scheduler
from exporter.secret_files import judge_secret_files
from exporter.status_page import (
    CONTENT_SECURITY_POLICY,
    RUNS_SHOWN,
    StatusPage,
    build_status_page,
    poll_seconds,
    render_status_page,
    status_json,
)

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
SCHEDULER = web.AppKey("scheduler", Scheduler)
REGISTRY = web.AppKey("registry", CollectorRegistry)
STARTED_AT = web.AppKey("started_at", float)
HEAL_STATE = web.AppKey("heal_state", HealState)
SECRET_WARNINGS = web.AppKey("secret_warnings", tuple)
SERVER_URL = web.AppKey("server_url", str)


def create_app(
    config: Config,
    *,
    collectors: Sequence[Collector] | None = None,
    pools: FpmPools | None = None,
    run_collectors: bool = True,
    heal_state: HealState | None = None,
    secret_warnings: tuple[str, ...] | None = None,
    server_url: str | None = None,
) -> web.Application:
    """Build the app. `collectors` overrides those built from `config` (tests pass fakes), `pools` is
    the PHP-FPM registry they were built with, handed on to the heal (built here when not given);
    `run_collectors=False` leaves collection to the caller (tests drive the scheduler directly);
    `heal_state` is the token judged at start and `secret_warnings` the other secret files' warnings
    (both judged from `config` when not given; HealTokenError, SecretFileError); `server_url` is where
    clients reach the server, for the commands the status page prints (default: plain HTTP on
    `config.listen_address`)."""
    pools = pools if pools is not None else FpmPools(config.php_fpm)
    scheduler = Scheduler(build_collectors(config, pools=pools) if collectors is None else collectors)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(scheduler))
    http_errors = HttpErrors()
    registry.register(SnapshotCollector(http_errors))

    app = web.Application()
    app[CONFIG] = config
    app[SCHEDULER] = scheduler
    app[REGISTRY] = registry
    app[STARTED_AT] = time.time()
    app[HTTP_ERRORS] = http_errors
    app[HEAL_STATE] = heal_state if heal_state is not None else read_heal_state(config.heal)
    app[SECRET_WARNINGS] = secret_warnings if secret_warnings is not None else judge_secret_files(
        config, except_keys=frozenset({"heal.token_file"}))
    app[SERVER_URL] = server_url or advice.server_url(split_listen_address(config.listen_address))
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/", handle_status_page)
    app.router.add_get("/status.json", handle_status_json)
    app.cleanup_ctx.append(_collection(run_collectors))
    # After the collection context, so that on shutdown heal runs stop before the collectors close.
    runner = setup_heal(app, config, scheduler, pools, app[HEAL_STATE])
    registry.register(SnapshotCollector(runner.metrics))
    registry.register(SnapshotCollector(setup_deploy(app, config, runner).metrics))
    return app


def _collection(enabled: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        scheduler = app[SCHEDULER]
        task = asyncio.create_task(scheduler.run(), name="scheduler") if enabled else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await scheduler.close()

    return ctx


async def handle_metrics(request: web.Request) -> web.Response:
    # prometheus_client negotiates text vs OpenMetrics from the Accept header, as its own server does.
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[REGISTRY])
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def handle_healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Collector health is in /metrics and on the status page."""
    return web.json_response({"status": "ok", "version": __version__})


async def _status_page(app: web.Application) -> StatusPage:
    runner = app[HEAL_RUNNER]
    report = build_report(app[SCHEDULER].statuses(), heal=app[HEAL_STATE], warnings=app[SECRET_WARNINGS],
                          feasibility=runner.feasibility)
    recorded = await runner.audit.recent_runs(RUNS_SHOWN)
    return build_status_page(report, app[CONFIG], runner, app[SERVER_URL], recorded=recorded)


async def handle_status_page(request: web.Request) -> web.Response:
    html = render_status_page(await _status_page(request.app), started_at=request.app[STARTED_AT],
                              poll=poll_seconds(request.query.get("refresh")),
                              deploys=list(request.app[DEPLOYER].metrics.recent))
    return web.Response(text=html, content_type="text/html",
                        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


async def handle_status_json(request: web.Request) -> web.Response:
    """What an open status page refreshes in place (see exporter.status_page)."""
    return web.json_response(status_json(await _status_page(request.app)))
