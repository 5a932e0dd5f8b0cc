"""``audience-gateway`` command line: serve, migrate, endpoints, keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import uvloop
from aiohttp import web

from gateway import __version__, admin_cli, state
from gateway.app import create_app
from gateway.database import database_connection
from gateway.embedded import EmbeddedPostgresError
from gateway.errors import DatabaseUnavailable
from gateway.migrations import apply_migrations
from gateway.settings import Settings, SettingsError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("gateway")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audience-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"audience-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the Exchange Segment API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    _add_database_flag(serve)
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    _add_database_flag(migrate)
    migrate.set_defaults(run=_migrate)
    admin_cli.add_commands(commands, _add_database_flag)  # endpoints, keys
    return parser


def _add_database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL URL (default: GATEWAY_DATABASE_URL, else the embedded server)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(database_url=args.database_url)
    except SettingsError as exc:
        print(f"audience-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner: Callable[[argparse.Namespace, Settings], Awaitable[int]] = args.run
    try:
        return uvloop.run(runner(args, settings))
    except (DatabaseUnavailable, EmbeddedPostgresError) as exc:
        print(f"audience-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except admin_cli.CommandFailed as exc:
        print(f"audience-gateway: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    stop = _stop_on_signals()  # before anything is printed: a signal right after "listening" must drain
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=30)
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()
        raise
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1] if args.port == 0 else args.port  # type: ignore[union-attr]
        generated = app.get(state.GENERATED_KEY)
        if generated:
            print(f"audience-gateway created the first API key (admin scope, shown only once): {generated}",
                  flush=True)
        print(f"audience-gateway listening on http://{args.host}:{port}", flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
    return EXIT_OK


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async with database_connection(settings) as conn:
        applied = await apply_migrations(conn)
    print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    return EXIT_OK
