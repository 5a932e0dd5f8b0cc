"""``audience-gateway endpoints …`` and ``keys …``: manage endpoints (tenants) and their API keys.

These commands work while ``serve`` runs on the same data dir (they attach to its embedded PostgreSQL),
when nothing runs (they start and stop it), and against ``GATEWAY_DATABASE_URL`` / ``--database-url``.
Like ``serve`` they first apply missing migrations. They say on stderr which database they use, and refuse
(exit 2) a data dir that holds no database unless ``--init`` is given: run from the wrong directory, the
default ``./.gateway`` would otherwise be a second, empty database whose keys work nowhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg

from gateway.ids import parse_int
from gateway.auth.keys import SCOPES, generate_key, insert_key, list_keys, revoke_key
from gateway.db.pool import database_connection, redact
from gateway.db.embedded import is_initialised
from gateway.audience.endpoints import NAME_PATTERN, create_endpoint, endpoint_id, list_endpoints, valid_name
from gateway.db.migrations import apply_migrations
from gateway.settings import Settings

EXIT_NOT_FOUND = 1
EXIT_NO_DATABASE = 2


class CommandFailed(Exception):
    """The command could not do what was asked; ``cli.main`` prints the message and exits with the code."""

    def __init__(self, message: str, exit_code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_commands(commands: argparse._SubParsersAction, add_database_flag: Callable[[argparse.ArgumentParser], None]
                 ) -> None:
    """Register ``endpoints`` and ``keys`` with their sub-commands on the main parser's ``commands``."""
    endpoints = commands.add_parser("endpoints", help="create and list endpoints (tenants)")
    actions = endpoints.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create an endpoint")
    create.add_argument("name", type=_endpoint_name, metavar="NAME",
                        help="one word of letters, digits, '.', '_' or '-'")
    create.set_defaults(run=_endpoints_create)
    listing = actions.add_parser("list", help="one endpoint a line: id, name, created, active keys, segments")
    listing.set_defaults(run=_endpoints_list)
    for parser in (create, listing):
        add_database_flags(parser, add_database_flag)

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key and print its secret (once, as the last word)")
    create.add_argument("--endpoint", required=True, type=_endpoint_name, metavar="NAME",
                        help="the endpoint (tenant) it acts for")
    create.add_argument("--scope", required=True, choices=SCOPES,
                        help="read: GET routes; write: also pushes, segment creation and jobs; admin: everything")
    create.add_argument("--label", default="", metavar="TEXT",
                        help="a note for humans, shown by keys list (default: none)")
    create.add_argument("--expires-days", type=_positive_int, default=None, metavar="N",
                        help="the key stops working N days from now (default: never)")
    create.set_defaults(run=_keys_create)
    listing = actions.add_parser("list", help="one key a line: id, endpoint, scope, label, created, last used, "
                                              "expiry, status; never a secret")
    listing.add_argument("--endpoint", type=_endpoint_name, default=None, metavar="NAME",
                         help="only this endpoint's keys (default: every endpoint's)")
    listing.set_defaults(run=_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key; every running gateway refuses it within a second")
    revoke.add_argument("key_id", type=_positive_int, metavar="ID", help="the key's id, as keys list shows it")
    revoke.set_defaults(run=_keys_revoke)
    for parser in (create, listing, revoke):
        add_database_flags(parser, add_database_flag)


def add_database_flags(parser: argparse.ArgumentParser,
                       add_database_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    """``--database-url`` and ``--init``, as every admin command takes them."""
    add_database_flag(parser)
    parser.add_argument("--init", action="store_true",
                        help="create the embedded database if the data dir has none (default: refuse, exit 2)")


def _endpoint_name(text: str) -> str:
    if not valid_name(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an endpoint name ({NAME_PATTERN.pattern})")
    return text


def _positive_int(text: str) -> int:
    value = parse_int(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def announce_database(settings: Settings, *, init: bool) -> None:
    """Print (stderr) which database the command uses; CommandFailed (exit 2) if the data dir holds none."""
    if settings.database_url is not None:
        print(f"audience-gateway: database {redact(settings.database_url)}", file=sys.stderr)
        return
    data_dir = settings.data_dir.resolve()
    if not init and not is_initialised(data_dir):
        raise CommandFailed(
            f"no database in {data_dir} (the data dir: GATEWAY_DATA_DIR, default ./.gateway in the current "
            f"directory). Point GATEWAY_DATA_DIR at the data dir that serve uses, or give --database-url / "
            f"GATEWAY_DATABASE_URL; --init creates a new, empty database there.", EXIT_NO_DATABASE)
    print(f"audience-gateway: data dir {data_dir}", file=sys.stderr)


@asynccontextmanager
async def migrated_connection(settings: Settings, *, init: bool) -> AsyncIterator[asyncpg.Connection]:
    announce_database(settings, init=init)
    async with database_connection(settings) as conn:
        await apply_migrations(conn)
        yield conn


async def _require_endpoint(conn: asyncpg.Connection, name: str) -> None:
    if await endpoint_id(conn, name) is None:
        raise CommandFailed(f"there is no endpoint named {name!r} (see: audience-gateway endpoints list)")


def _time(at: dt.datetime | None) -> str:
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if at else "-"


def _columns(*values: object) -> str:
    """One tab-separated line; free text loses its tabs and line breaks."""
    return "\t".join(" ".join(str(value).split()) or "-" for value in values)


async def _endpoints_create(args: argparse.Namespace, settings: Settings) -> int:
    async with migrated_connection(settings, init=args.init) as conn:
        new_id = await create_endpoint(conn, args.name)
    if new_id is None:
        raise CommandFailed(f"an endpoint named {args.name!r} exists already")
    print(f"created endpoint {args.name} (id {new_id})")
    return 0


async def _endpoints_list(args: argparse.Namespace, settings: Settings) -> int:
    async with migrated_connection(settings, init=args.init) as conn:
        rows = await list_endpoints(conn)
    for row in rows:
        print(_columns(row["id"], row["name"], _time(row["created_at"]), f"{row['active_keys']} active key(s)",
                       f"{row['segments']} segment(s)"))
    return 0


async def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    expires_at = None
    if args.expires_days is not None:
        expires_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=args.expires_days)
    secret = generate_key()
    async with migrated_connection(settings, init=args.init) as conn:
        await _require_endpoint(conn, args.endpoint)
        key_id = await insert_key(conn, secret, endpoint=args.endpoint, scope=args.scope, label=args.label,
                                  expires_at=expires_at)
    expiry = f"expires {_time(expires_at)}" if expires_at else "never expires"
    print(f"created key {key_id} for endpoint {args.endpoint}, {args.scope} scope, {expiry}")
    print(f"its secret, shown only this once: {secret}")
    return 0


async def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async with migrated_connection(settings, init=args.init) as conn:
        if args.endpoint is not None:
            await _require_endpoint(conn, args.endpoint)
        rows = await list_keys(conn, args.endpoint)
    now = dt.datetime.now(dt.timezone.utc)
    for row in rows:
        if row["revoked_at"] is not None:
            status = f"revoked {_time(row['revoked_at'])}"
        elif row["expires_at"] is not None and row["expires_at"] <= now:
            status = "expired"
        else:
            status = "active"
        print(_columns(row["id"], row["endpoint_name"], row["scope"], row["label"], _time(row["created_at"]),
                       _time(row["last_used_at"]), _time(row["expires_at"]), status))
    return 0


async def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async with migrated_connection(settings, init=args.init) as conn:
        row = await revoke_key(conn, args.key_id)
    if row is None:
        raise CommandFailed(f"there is no key with id {args.key_id} (see: audience-gateway keys list)")
    print(f"revoked key {row['id']} ({row['endpoint_name']}, {row['scope']} scope) at {_time(row['revoked_at'])}")
    return 0
