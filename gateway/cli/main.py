"""``audience-gateway`` command line: serve, top, migrate, endpoints, keys, segments, push, pull, conformance."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from aiohttp import web

from gateway import __version__, state
from gateway.cli import admin as admin_cli, segments as segments_cli
from gateway.ops import top
from gateway.client import cli as client_cli
from gateway.client.conformance import ConformanceOptions, conformance
from gateway.app import create_app
from gateway.http.clients import runner_options
from gateway.db.pool import database_connection
from gateway.http.drain import drain
from gateway.db.embedded import EmbeddedPostgresError
from gateway.errors import DatabaseUnavailable
from gateway.ops.logs import configure_json_logging
from gateway.db.migrations import apply_migrations
from gateway.settings import SETTINGS, Settings, SettingsError, parse_positive_int
from gateway.ops.workers import WorkerFailed, Workers

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("gateway")
FINISH_SENDING_SECONDS = 5


MAIN_SETTINGS = ("GATEWAY_DATA_DIR", "GATEWAY_DATABASE_URL", "GATEWAY_API_KEY")
DESCRIPTION = ("audience-gateway: the Exchange Segment API on PostgreSQL, and the commands that manage it.\n\n"
               "Start with: audience-gateway serve (data in ./.gateway, an embedded PostgreSQL). Add --help to "
               "any command for its options, e.g. audience-gateway keys create --help.")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default; descriptions and epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, "", argparse.SUPPRESS) or "default" in text.lower():
            return text  # a flag is off unless given; a None default is explained in the text itself
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            hang = " " * (len(line) - len(line.lstrip()))
            lines.append(textwrap.fill(line.strip(), width, initial_indent=indent + hang,
                                       subsequent_indent=indent + hang + ("  " if hang else ""))
                         if line.strip() else "")
        return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """The parser of every command and sub-command (sub-parsers are made of the parent's class)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def serve_epilog() -> str:
    """The main settings with their defaults, and where the others are."""
    lines = ["Settings are environment variables (flags override them). The main ones:"]
    for setting in SETTINGS:
        if setting.env in MAIN_SETTINGS:
            default = setting.default or "empty"
            lines.append(f"  {setting.env} (default: {default}): {setting.help.replace('`', '')}")
    lines.append(f"The other {len(SETTINGS) - len(MAIN_SETTINGS)} (limits, retention times, workers, logging, "
                 "shutdown) are listed with their defaults in the README, section Settings "
                 "(also in gateway/settings.py).")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="audience-gateway", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"audience-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the Exchange Segment API",
        description="Serve the Exchange Segment API (/v1) and the management API (/api). The first start "
                    "initialises the embedded PostgreSQL in GATEWAY_DATA_DIR (unless GATEWAY_DATABASE_URL is set), "
                    "applies migrations, and prints an admin API key once unless GATEWAY_API_KEY is set.",
        epilog=serve_epilog())
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free port")
    serve.add_argument("--workers", type=parse_positive_int, default=1, metavar="N",
                       help="processes serving the port (SO_REUSEPORT) on one database (default: 1)")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # started by --workers
    _add_database_flag(serve)
    serve.set_defaults(run=_serve)

    top_parser = commands.add_parser("top", help="live view of a running gateway's metrics (q or Ctrl-C quits)")
    top_parser.add_argument("--url", required=True, help="the gateway's base URL, e.g. http://127.0.0.1:8080")
    top_parser.add_argument("--key", default=None,
                            help="an API key, needed if GATEWAY_METRICS_REQUIRE_KEY is set (default: none)")
    top_parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                            help="seconds between refreshes")
    top_parser.add_argument("--once", action="store_true", help="print one refresh and exit")
    top_parser.set_defaults(run=_top)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    _add_database_flag(migrate)
    migrate.set_defaults(run=_migrate)
    admin_cli.add_commands(commands, _add_database_flag)  # endpoints, keys
    segments_cli.add_commands(commands, _add_database_flag)  # segments export, import
    client_cli.add_commands(commands)  # push, pull

    check = commands.add_parser(
        "conformance", help="run the Exchange call sequence against an endpoint and check its answers",
        description="Run the Exchange Segment API call sequence (create, list, details, ADD, REPLACE in three "
                    "batches, REMOVE, GET data, export job, failure cases) against any endpoint and check status "
                    "codes, envelopes, field types and the data read back. One line per check, then a summary. "
                    "Exit codes: 0 every check passed, 1 a check failed, 2 usage.")
    check.add_argument("--url", required=True, help="the endpoint's base URL, e.g. http://127.0.0.1:8080")
    check.add_argument("--key", required=True,
                       help="an API key with write scope (admin also lets it delete the segment it created)")
    check.add_argument("--junit", type=Path, default=None, metavar="FILE",
                       help="also write the results as JUnit XML, one testcase per check (default: none)")
    check.add_argument("--timeout", type=_positive_seconds, default=30.0, metavar="SECONDS",
                       help="longest wait for a connection or for the server's next bytes")
    check.add_argument("--job-timeout", type=_positive_seconds, default=120.0, metavar="SECONDS",
                       help="longest wait for an export job to complete")
    check.set_defaults(run=_conformance)
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _add_database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None, metavar="URL",
                        help="PostgreSQL URL (default: GATEWAY_DATABASE_URL, else the embedded PostgreSQL in "
                             "GATEWAY_DATA_DIR, default ./.gateway)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(database_url=getattr(args, "database_url", None))  # top has none
    except SettingsError as exc:
        print(f"audience-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        configure_json_logging(settings.log_level)
    else:
        logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner: Callable[[argparse.Namespace, Settings], Awaitable[int]] = args.run
    try:
        return uvloop.run(runner(args, settings))
    except (DatabaseUnavailable, EmbeddedPostgresError) as exc:
        print(f"audience-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (WorkerFailed, top.Unreachable) as exc:
        print(f"audience-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except admin_cli.CommandFailed as exc:
        print(f"audience-gateway: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    stop = _stop_on_signals()  # before anything is printed: a signal right after "listening" must drain
    if args.workers > 1:
        return await _serve_workers(args, settings, stop)
    app = create_app(settings)
    # Our request middleware writes the access lines (JSON, with the request id): aiohttp's is off.
    # The drain (gateway.http.drain) waits for requests in flight; aiohttp then only finishes sending answers.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=FINISH_SENDING_SECONDS, access_log=None,
                           **runner_options(settings))
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()
        raise
    try:
        site = web.TCPSite(runner, args.host, args.port, reuse_port=args.worker)
        await site.start()
        _freeze_start_up_objects()
        port = site._server.sockets[0].getsockname()[1] if args.port == 0 else args.port  # type: ignore[union-attr]
        _announce(app.get(state.GENERATED_KEY), args.host, port)
        await stop.wait()
        log.info("stopping: no new connections")
        await drain([site], app[state.IN_FLIGHT], settings.shutdown_timeout)
    finally:
        await runner.cleanup()
    return EXIT_OK


def _freeze_start_up_objects() -> None:
    """Keep what start-up created (modules, the app and its routes: about 50k objects that live as long as
    the process) out of every later collection of the garbage collector. Collecting the oldest generation
    walks all of them, and during a 1M-row push such collections held the event loop for 40–110 ms at a time
    (issue 15); they now walk only what was created since."""
    gc.collect()
    gc.freeze()


async def _serve_workers(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    workers = Workers(args.workers, args.host, args.port, settings)
    try:
        generated, port = await workers.start()
        _announce(generated, args.host, port)
        code = await workers.run_until(stop)
        log.info("stopping: workers exited")
        return code
    finally:
        await workers.close()


def _announce(generated_key: str | None, host: str, port: int) -> None:
    if generated_key:
        print(f"audience-gateway created the first API key (admin scope, shown only once): {generated_key}",
              flush=True)
    print(f"audience-gateway listening on http://{host}:{port}", flush=True)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _top(args: argparse.Namespace, settings: Settings) -> int:
    return await top.run(args.url, args.key, once=args.once, interval=args.interval)


async def _conformance(args: argparse.Namespace, settings: Settings) -> int:
    return await conformance(ConformanceOptions(url=args.url, key=args.key, junit=args.junit, timeout=args.timeout,
                                                job_timeout=args.job_timeout))


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async with database_connection(settings) as conn:
        applied = await apply_migrations(conn)
    print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    return EXIT_OK
