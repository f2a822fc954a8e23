"""The `cachewarden` command: `serve`, `check`, `heal`, `deploy`, `render`, `--version`.

Flags follow Prometheus exporters (`--config.file`, `--web.listen-address`, `--collector.X`,
`--no-collector.X`). The configuration is validated before anything starts; a bad one exits 2 with
every problem listed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exporter import __version__
from exporter.collectors import KINDS
from exporter.config import DEFAULT_LISTEN_ADDRESS, Config, ConfigError, load, split_listen_address

if TYPE_CHECKING:
    from exporter.heal.token import HealState
    from exporter.web_config import WebConfigFile

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_CONFIG = 0, 1, 2

log = logging.getLogger("cachewarden")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachewarden",
        description="Prometheus exporter and healing sidecar for PHP/Laravel caches.",
    )
    parser.add_argument("--version", action="version", version=f"cachewarden {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config.file", dest="config_file", type=Path, required=True,
                       help="YAML configuration file")
        p.add_argument("--log.level", dest="log_level", choices=["debug", "info", "warning", "error"],
                       help="overrides log_level from the configuration")
        for kind in KINDS:
            p.add_argument(f"--collector.{kind}", dest=f"collector_{kind}", action="store_true",
                           default=None, help=f"enable the {kind} collector")
            p.add_argument(f"--no-collector.{kind}", dest=f"collector_{kind}", action="store_false",
                           help=f"disable the {kind} collector")

    serve = sub.add_parser("serve", help="run the exporter")
    common(serve)
    serve.add_argument("--web.listen-address", dest="listen_address",
                       help=f"HOST:PORT to listen on (default from config, else {DEFAULT_LISTEN_ADDRESS})")
    serve.add_argument("--web.config.file", dest="web_config_file", type=Path,
                       help="TLS, basic auth and response headers, in the web configuration format of "
                            "Prometheus exporters (exporter-toolkit); reloaded when it or its "
                            "certificate files change")

    check = sub.add_parser("check", help="collect everything once and report; exit 1 if problems are found")
    common(check)
    check.add_argument("--format", choices=["text", "json"], default="text")

    heal = sub.add_parser("heal", help="run one heal action on one target now, or without an action every "
                          "plan for what is wrong with it; exit 1 unless verified")
    common(heal)
    heal.add_argument("action", nargs="?", help="e.g. views.recompile (GET /heal lists them); omitted: "
                      "the plans for whatever is wrong with the target now")
    heal.add_argument("--target", required=True, help="a target name from the configuration")
    heal.add_argument("--dry-run", action="store_true", help="only list what the action would do")
    heal.add_argument("--cache", metavar="{config,routes,events,packages,all}",
                      help="laravel.cache_rebuild: the bootstrap cache to rebuild, stale or not; all "
                           "(the default) rebuilds those measured stale or half-written")
    heal.add_argument("--format", choices=["text", "json"], default="text")

    deploy = sub.add_parser("deploy", help="prepare, activate and verify a release of one app; exit 1 "
                                           "unless verified")
    common(deploy)
    deploy.add_argument("--target", required=True, help="a laravel target name from the configuration")
    deploy.add_argument("--release", help="the new release folder (default: where the app root points)")
    deploy.add_argument("--previous-release", dest="previous_release",
                        help="the release served before (default: where the app root pointed before "
                             "--switch-command ran)")
    deploy.add_argument("--changed-files", dest="changed_files", type=Path,
                        help="a file listing the paths the release changed, one per line, relative to "
                             "the release (git diff --name-only)")
    deploy.add_argument("--phases", default="prepare,switch,activate,verify",
                        help="comma-separated phases to run (default: all)")
    deploy.add_argument("--skip", action="append", default=[], metavar="PHASE",
                        help="leave out a phase (repeatable)")
    deploy.add_argument("--switch-command", dest="switch_command",
                        help="the command that makes the release current (run without a shell)")
    deploy.add_argument("--rollback-command", dest="rollback_command",
                        help="run when verify fails after a switch (run without a shell)")
    deploy.add_argument("--verify-timeout", dest="verify_timeout", type=float, default=60.0,
                        help="seconds verify waits for every condition (default: 60)")
    deploy.add_argument("--dry-run", action="store_true", help="only list what each phase would do")
    deploy.add_argument("--format", choices=["text", "json"], default="text")

    render = sub.add_parser("render", help="write alert rules and Grafana dashboards for the thresholds")
    render.add_argument("--config.file", dest="config_file", type=Path,
                        help="YAML configuration file; its `alerts` section sets the thresholds "
                             "(default: the built-in thresholds)")
    render.add_argument("--output-dir", dest="output_dir", type=Path, default=Path("."),
                        help="writes OUTPUT_DIR/alerts and OUTPUT_DIR/grafana (default: .)")
    return parser


def _collector_switches(args: argparse.Namespace) -> dict[str, bool]:
    return {k: v for k in KINDS if (v := getattr(args, f"collector_{k}")) is not None}


def _setup_logging(level: str) -> None:
    from exporter.text import OneLineMessages

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(OneLineMessages())
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # What is printed is made encodable (exporter.text); this only spares a terminal that cannot show
    # some character (LC_ALL=C without UTF-8, PYTHONIOENCODING=ascii) a crash over it.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    if args.command == "render":
        return _render(args.config_file, args.output_dir)
    try:
        config = load(args.config_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_CONFIG
    _setup_logging(args.log_level or config.log_level)
    switches = _collector_switches(args)
    if args.command in ("serve", "check"):
        from exporter.heal.token import HealTokenError, read_heal_state
        from exporter.secret_files import SecretFileError, judge_secret_files

        try:
            heal_state = read_heal_state(config.heal)
            secret_warnings = judge_secret_files(config, except_keys=frozenset({"heal.token_file"}))
        except (HealTokenError, SecretFileError) as exc:
            print(f"{args.config_file}: {exc}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        for warning in (*heal_state.warnings, *secret_warnings):
            log.warning("%s", warning)
    if args.command == "serve":
        if args.listen_address is None:
            address = split_listen_address(config.listen_address)  # validated with the configuration
        else:
            try:
                address = split_listen_address(args.listen_address)
            except ValueError as exc:
                print(f"--web.listen-address: {exc}", file=sys.stderr)
                return EXIT_BAD_CONFIG
        web_config = None
        if args.web_config_file is not None:
            from exporter.secret_files import SecretFileError, judge_secret_file
            from exporter.web_config import WebConfigFile

            try:
                web_config = WebConfigFile(args.web_config_file)
                key_warnings = [judge_secret_file(key, path) for key, path in web_config.secret_files()]
            except ConfigError as exc:
                print(exc, file=sys.stderr)
                return EXIT_BAD_CONFIG
            except SecretFileError as exc:
                print(f"{args.web_config_file}: {exc}", file=sys.stderr)
                return EXIT_BAD_CONFIG
            for warning in filter(None, key_warnings):
                log.warning("%s: %s", args.web_config_file, warning)
        return _serve(config, switches, address, heal_state, secret_warnings, web_config)
    if args.command == "check":
        return asyncio.run(_check(config, switches, args.format, heal_state, secret_warnings))
    if args.command == "heal":
        from exporter.heal.command import heal_command

        return asyncio.run(
            heal_command(config, switches, args.action, args.target, args.dry_run, args.format,
                         {} if args.cache is None else {"cache": args.cache})
        )
    if args.command == "deploy":
        return _deploy(config, switches, args)
    raise AssertionError(args.command)  # argparse rejects unknown commands


def _deploy(config: Config, switches: dict[str, bool], args: argparse.Namespace) -> int:
    import shlex

    from exporter.deploy.command import deploy_command
    from exporter.deploy.phases import DeployRequest

    try:
        phases = tuple(p.strip() for p in args.phases.split(",") if p.strip() not in args.skip)
        changed = None
        if args.changed_files is not None:
            changed = tuple(args.changed_files.read_text(encoding="utf-8", errors="replace").splitlines())
        switch = tuple(shlex.split(args.switch_command)) if args.switch_command else None
        rollback = tuple(shlex.split(args.rollback_command)) if args.rollback_command else None
    except OSError as exc:
        print(f"--changed-files {args.changed_files}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except ValueError as exc:  # shlex: an unterminated quote
        print(f"--switch-command/--rollback-command: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if not args.verify_timeout > 0:
        print(f"--verify-timeout {args.verify_timeout}: must be more than 0", file=sys.stderr)
        return EXIT_BAD_CONFIG
    req = DeployRequest(args.target, args.release, args.previous_release, phases, args.dry_run, changed,
                        switch, rollback, args.verify_timeout, "cli")
    return asyncio.run(deploy_command(config, switches, req, args.format))


async def _check(config: Config, switches: dict[str, bool], fmt: str, heal_state: HealState,
                 secret_warnings: tuple[str, ...]) -> int:
    from exporter.collectors import build_collectors
    from exporter.heal.feasibility import judge
    from exporter.heal.plans import resolve_plans
    from exporter.report import build_report
    from exporter.scheduler import Scheduler

    scheduler = Scheduler(build_collectors(config, switches))
    try:
        report = build_report(await scheduler.collect_all(), heal=heal_state, warnings=secret_warnings,
                              feasibility=judge(config, resolve_plans(config.heal), heal_state.enabled))
    finally:
        await scheduler.close()
    if fmt == "json":
        print(json.dumps(report.as_dict(), indent=2))  # as_dict() is json_safe
    else:
        sys.stdout.write(report.as_text())
    return EXIT_OK if report.healthy else EXIT_PROBLEMS


def _render(config_file: Path | None, output_dir: Path) -> int:
    from exporter.render import render_all, write_files

    try:
        config = load(config_file) if config_file is not None else Config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_CONFIG
    changed = write_files(render_all(config.alerts), output_dir)
    for path in changed:
        print(f"wrote {path}")
    return EXIT_OK


def _serve(config: Config, switches: dict[str, bool], address: tuple[str, int],
           heal_state: HealState, secret_warnings: tuple[str, ...],
           web_config: WebConfigFile | None = None) -> int:
    from prometheus_client import CollectorRegistry

    from exporter.app import REGISTRY, create_app
    from exporter.collectors import build_collectors
    from exporter.descriptors import budget, raise_soft_limit
    from exporter.heal.advice import server_url
    from exporter.heal.store import POOL_SIZE
    from exporter.metrics import SnapshotCollector
    from exporter.php.pools import FpmPools
    from exporter.serving import DescriptorShortage, Limits, listening_sockets, serve

    host, port = address
    try:
        sockets = listening_sockets(host, port)
    except (OSError, OverflowError, UnicodeError) as exc:
        # An address in use, a host that is not ours or cannot be resolved: the setup is wrong, not us.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.error("cannot listen on %s:%d: %s", host, port, reason)
        print(f"cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    old_soft, soft = raise_soft_limit()
    pools = FpmPools(config.php_fpm)  # one registry for the collectors and the heal
    collectors = build_collectors(config, switches, pools)
    need = budget((c.kind for c in collectors), heal_store_connections=(
        (POOL_SIZE if config.heal.redis_url else 0) if heal_state.enabled else None))
    try:
        limits = Limits.for_process(config.web, soft, need.reserved, need.explain())
    except DescriptorShortage as exc:
        for sock in sockets:
            sock.close()
        log.error("%s", exc)
        print(f"cannot serve: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if soft != old_soft:
        log.info("raised the soft RLIMIT_NOFILE from %d to %d; processes the heal starts get %d",
                 old_soft, soft, old_soft)
    if limits.short:
        log.warning("%s", limits.short)
    tls = web_config is not None and web_config.tls
    app = create_app(config, collectors=collectors, pools=pools, heal_state=heal_state,
                     secret_warnings=secret_warnings, server_url=server_url(address, tls=tls))
    registry: CollectorRegistry = app[REGISTRY]
    if web_config is not None:
        from exporter.web_auth import WebAuth

        WebAuth(web_config).install(app)
    log.info("cachewarden %s listening on %s (%s, at most %d connections, %d of them waiting for a "
             "request header; RLIMIT_NOFILE %d: %s)", __version__,
             ", ".join(_address(s.getsockname()) for s in sockets), "TLS" if tls else "plain HTTP",
             limits.max_connections, limits.max_waiting, limits.nofile, need.explain())
    # SIGINT and SIGTERM shut down gracefully: in-flight requests finish and cleanup_ctx closes the
    # collectors' connections.
    asyncio.run(serve(app, sockets, limits, lambda guard: registry.register(SnapshotCollector(guard)),
                      shutdown_timeout=10.0, tls=web_config.ssl_context if tls and web_config else None))
    return EXIT_OK


def _address(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

if __name__ == "__main__":  # pragma: no cover
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    raise SystemExit(main())
