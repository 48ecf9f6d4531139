"""The command line: run the server, validate a config, or print an admin token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from .app import create_apps, reload_config_file
from .config.durations import parse_duration
from .config.loader import load_config_file
from .devsecret import banner, dev_secret, with_dev_secret
from .errors import ConfigError, ListenError, RegistrationError
from .eventloop import loop_factory
from .hooks.manager import build_plugin_manager
from .hooks.registry import Registry, build_registry
from .http.listen import bind
from .keys import STARTUP_FAILED
from .logs import setup_logging
from .reload.isolation import Isolation, load_folder
from .settings import Settings, SettingsError, from_environment
from .shutdown import StopSignals, exit_if_threads_remain
from .tasks import cancel_and_wait

log = logging.getLogger("workflow.server")
MIN_SECRET_BYTES = 32


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `workflow-server` and `python -m server`."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args and args[0] in ("run", "validate", "token") else "run"
    if args and args[0] == command:
        args = args[1:]
    handler = {"run": _run, "validate": _validate, "token": _token}[command]
    try:
        return handler(args)
    except (SettingsError, ConfigError, RegistrationError) as exc:
        # Config problems already read `file:line: message`; print them as they are.
        for problem in getattr(exc, "problems", None) or [f"workflow-server: {exc}"]:
            print(problem, file=sys.stderr)
        return 1


_COMMANDS = """\
commands:
  workflow-server -config FILE [--addr :8080] [--admin-addr 127.0.0.1:8081] [--dev]
                                  run the server (the default command; also `workflow-server run ...`)
  workflow-server validate FILE   check a config; exit 0, or 1 with every problem as file:line: message
  workflow-server token --sub NAME [--role admin|viewer] [--ttl 1h] [--dev]
                                  print an admin API token signed with JWT_SECRET

examples:
  workflow-server -config example/order-processing-pipeline.yaml
  workflow-server -config example/order-processing-pipeline.yaml --dev    # what `make run` does
  workflow-server validate example/order-processing-pipeline.yaml
  JWT_SECRET=... workflow-server token --sub ada --role admin --ttl 15m
  workflow-server token --dev --sub ada                                  # signed with data/dev-jwt-secret

`workflow-server validate --help` and `workflow-server token --help` say more.
"""
_DEV_HELP = (
    "when JWT_SECRET is unset, sign admin tokens with the development secret WORKFLOW_DATA_DIR/dev-jwt-secret "
    "(random, created on first use, mode 0600)"
)


def _run(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="workflow-server",
        usage=(
            "workflow-server [run] [-config FILE] [--addr ADDR] [--admin-addr ADDR] [--dev]\n"
            "       workflow-server validate FILE\n"
            "       workflow-server token --sub NAME [--role ROLE] [--ttl TTL] [--dev]"
        ),
        allow_abbrev=False,
        description="Run the workflow server, validate a config, or print an admin token.",
        epilog=_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-config", "--config", "-c", dest="config", help="config file (env WORKFLOW_CONFIG)")
    parser.add_argument("-addr", "--addr", dest="addr", help="main listener, e.g. :8080 (env WORKFLOW_ADDR)")
    parser.add_argument(
        "-admin-addr",
        "--admin-addr",
        dest="admin_addr",
        help="admin listener (env WORKFLOW_ADMIN_ADDR; default 127.0.0.1:8081, loopback only)",
    )
    parser.add_argument("-dev", "--dev", action="store_true", help=_DEV_HELP + "; print a ready admin token at start")
    ns = parser.parse_args(args)
    settings = from_environment(config=ns.config, addr=ns.addr, admin_addr=ns.admin_addr)
    dev_note = None
    if ns.dev and settings.jwt_secret is None:
        settings = with_dev_secret(settings)
        dev_note = banner(settings)
    setup_logging(settings.log_format, settings.log_level)
    if settings.config_path is None:
        parser.error("no config file: pass -config FILE or set WORKFLOW_CONFIG")
    # CONTRACT §10, step 1: both listeners first, so a port in use stops us before anything is touched.
    try:
        sockets = [bind(settings.addr, "main"), bind(settings.admin_addr, "admin")]
    except ListenError as exc:
        print(f"workflow-server: {exc}", file=sys.stderr)
        return 1
    if dev_note is not None:
        print(dev_note, file=sys.stderr, flush=True)
    try:
        apps = create_apps(settings, background_start=True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    try:
        factory, loop_name = loop_factory(settings.event_loop)
    except RuntimeError as exc:
        for sock in sockets:
            sock.close()
        print(f"workflow-server: {exc}", file=sys.stderr)
        return 1
    log.info("event loop: %s", loop_name)
    with asyncio.Runner(loop_factory=factory) as runner:
        code = runner.run(serve(apps.main, apps.admin, settings, sockets))
    exit_if_threads_remain()  # a step thread stuck forever would keep the process alive after the drain
    return code


async def serve(
    main_app: web.Application, admin_app: web.Application, settings: Settings, sockets: list[socket.socket]
) -> int:
    """Answer on both sockets until SIGTERM or SIGINT (0) or a failed start-up (1), then drain and return."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # First: from here on a signal ends the process within the shutdown timeout, even during start-up.
    StopSignals(loop, stop.set, settings.shutdown_timeout).install()
    runners = []
    for app, sock, name in ((main_app, sockets[0], "main"), (admin_app, sockets[1], "admin")):
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout)
        await runner.setup()
        runners.append(runner)
        await web.SockSite(runner, sock, shutdown_timeout=settings.shutdown_timeout).start()
        log.info("listening on %s (%s)", settings.addr if name == "main" else settings.admin_addr, name)
    reloads: set[asyncio.Task[bool]] = set()  # strong references until each reload finishes

    def reload_on_hangup() -> None:
        task = loop.create_task(reload_config_file(main_app))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_hangup)
    failed = main_app[STARTUP_FAILED]
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    loop.remove_signal_handler(signal.SIGHUP)  # no config reload may start while the components stop
    await cancel_and_wait(*reloads)
    started = time.monotonic()
    log.info("stopping: draining in-flight work (up to %.0fs)", settings.shutdown_timeout)
    for runner in reversed(runners):  # admin first; the main app owns the shared resources
        await runner.cleanup()
    log.info("stopped after %.2fs", time.monotonic() - started)
    return 1 if failed.is_set() else 0


def _validate(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="workflow-server validate",
        description="Check a config file against the plugins and the components folder.",
        epilog="example:\n  workflow-server validate example/order-processing-pipeline.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path)
    ns = parser.parse_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    settings = from_environment()
    base = build_registry(build_plugin_manager())
    registry, problems = asyncio.run(_load_folder(base, settings))
    try:
        config = load_config_file(ns.file, registry, max_depth=settings.max_json_depth)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    print(f"{ns.file}: ok ({len(config.pipelines)} pipelines)")
    return 0


async def _load_folder(base: Registry, settings: Settings) -> tuple[Registry, list[str]]:
    # Candidates are only imported and registered: the config is compiled once, below, against all of them,
    # so a config mistake is reported at its own line rather than as a refusal of the component it uses.
    async with Isolation.from_settings(settings) as isolation:  # the helper stops with validate
        return await load_folder(base, settings.components_dir, isolation, None)


def _token(args: list[str]) -> int:
    import jwt

    parser = argparse.ArgumentParser(
        prog="workflow-server token",
        description="Print an admin JWT signed with JWT_SECRET (HS256).",
        epilog=(
            "examples:\n  JWT_SECRET=... workflow-server token --sub ada --role admin --ttl 15m\n"
            "  workflow-server token --dev --sub ada        # signed with the secret `make run` uses"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-sub", "--sub", required=True, help="the token's subject (who)")
    parser.add_argument("-role", "--role", default="admin", help="role claim (default admin)")
    parser.add_argument(
        "-ttl", "--ttl", default="1h", help="lifetime, e.g. 15m, 1h (default 1h; at most JWT_MAX_LIFETIME)"
    )
    parser.add_argument("-dev", "--dev", action="store_true", help=_DEV_HELP)
    ns = parser.parse_args(args)
    if not ns.sub.strip():
        parser.error("--sub must name who the token is for")
    settings = from_environment()
    secret = settings.jwt_secret or (dev_secret(settings.data_dir) if ns.dev else None)
    if not secret or len(secret.encode()) < MIN_SECRET_BYTES:
        print(f"workflow-server: JWT_SECRET must be set to at least {MIN_SECRET_BYTES} bytes", file=sys.stderr)
        return 1
    try:
        ttl = parse_duration(ns.ttl)
    except ValueError as exc:
        parser.error(f"--ttl: {exc}")
    if ttl > settings.jwt_max_lifetime:  # the server would refuse the token
        parser.error(f"--ttl: {ns.ttl} is longer than JWT_MAX_LIFETIME ({settings.jwt_max_lifetime / 3600:g}h)")
    now = int(time.time())
    claims = {"sub": ns.sub, "role": ns.role, "iat": now, "exp": now + int(ttl)}
    print(jwt.encode(claims, secret, algorithm="HS256"))
    return 0
