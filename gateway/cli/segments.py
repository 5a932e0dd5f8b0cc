"""``audience-gateway segments export`` and ``segments import FILE [--dry-run]``: bulk segment metadata.

``export`` writes every segment (of one endpoint with ``--endpoint``), whatever its status, as JSON on
stdout: ``{"segments": [...]}``, each as ``GET /api/segments/{id}`` shows it. ``import`` reads that shape
and upserts by id, all or nothing in one transaction: an existing segment gets the file's ``name``,
``description``, ``category`` and ``status`` (fields left out are kept; the read-only ones such as
``memberCount`` are ignored; its ``endpoint``, if given, must be its own), and its ``identityHashing``
(``"sha256"`` or null) when the file gives one, which changes only while the segment holds no data (as
``PATCH /api/segments/{id}``: the import then fails). A missing id is created with that id for
``endpoint`` (required), with its ``name``, optional ``type``, ``identityAttribute``, ``attributes`` (else
fixed by its first upload, as for ``POST /v1/segments``) and ``identityHashing``: an exported hashing
segment comes back hashing. Every change is printed;
``--dry-run`` applies them in a transaction that is rolled back, so what it prints is exactly what the
import would do. Connection as for ``endpoints`` and ``keys`` (gateway.cli.admin).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from gateway.cli.admin import CommandFailed, add_database_flags, migrated_connection
from gateway.audience.endpoints import endpoint_id
from gateway.errors import GatewayError
from gateway.ids import MAX_ID
from gateway.audience.metadata import EDITABLE, STATUSES, change_segment, describe, insert_segment
from gateway.audience.segments import SEGMENT_TYPES, hold_segment
from gateway.ingest.upload import IDENTITY_HASHINGS
from gateway.privacy.hashing import set_identity_hashing
from gateway.settings import Settings
from gateway.db.queries import QUERIES

EXIT_BAD_FILE = 2
CREATE_FIELDS = ("endpoint", "type", "identityAttribute", "attributes")
HASHING = "identityHashing"  # set at creation, changed on an existing segment only while it holds no data
READ_ONLY = ("memberCount", "createdAt", "updatedAt", "metadataUpdatedAt", "lastUploadAt",
             "deletedAt", "purgedAt")


def add_commands(commands: argparse._SubParsersAction, add_database_flag: Callable[[argparse.ArgumentParser], None]
                 ) -> None:
    """Register ``segments export`` and ``segments import`` on the main parser's ``commands``."""
    segments = commands.add_parser("segments", help="export and import segment metadata (JSON)")
    actions = segments.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write every segment's metadata as JSON on stdout")
    export.add_argument("--endpoint", default=None, metavar="NAME",
                        help="only this endpoint's segments (default: every endpoint's)")
    export.set_defaults(run=_export)
    load = actions.add_parser("import", help="upsert segment metadata by id from a JSON file (- for stdin)")
    load.add_argument("file", metavar="FILE", help="a file written by segments export, or - for stdin")
    load.add_argument("--dry-run", action="store_true", help="print the changes without making them")
    load.set_defaults(run=_import)
    for parser in (export, load):
        add_database_flags(parser, add_database_flag)


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    async with migrated_connection(settings, init=args.init) as conn:
        if args.endpoint is not None and await endpoint_id(conn, args.endpoint) is None:
            raise CommandFailed(f"there is no endpoint named {args.endpoint!r} (see: audience-gateway endpoints list)")
        rows = await conn.fetch(QUERIES["meta_all_segments"], args.endpoint)
    sys.stdout.buffer.write(orjson.dumps({"segments": [describe(row) for row in rows]},
                                         option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()
    return 0


def read_records(source: str) -> list[dict[str, Any]]:
    """The file's segment records, each checked; CommandFailed (exit 2) naming the first problem."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        document = orjson.loads(raw)
    except OSError as exc:
        raise CommandFailed(f"cannot read {source}: {exc.strerror}", EXIT_BAD_FILE) from None
    except orjson.JSONDecodeError as exc:
        raise CommandFailed(f"{source} is not JSON: {exc}", EXIT_BAD_FILE) from None
    if not isinstance(document, dict) or not isinstance(document.get("segments"), list):
        raise CommandFailed(f'{source} must hold {{"segments": [...]}}, as segments export writes',
                            EXIT_BAD_FILE)
    records = document["segments"]
    seen: set[int] = set()
    for number, record in enumerate(records, 1):
        problem = record_problem(record)
        if problem is None and record["id"] in seen:
            problem = f"id {record['id']} appears twice"
        if problem is not None:
            raise CommandFailed(f"{source}: segment #{number}: {problem}", EXIT_BAD_FILE)
        seen.add(record["id"])
    return records


def record_problem(record: Any) -> str | None:
    """What is wrong with one record, or None."""
    if not isinstance(record, dict):
        return "must be a JSON object"
    unknown = sorted(set(record) - {"id", *EDITABLE, *CREATE_FIELDS, HASHING, *READ_ONLY})
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}"
    segment_id = record.get("id")
    if isinstance(segment_id, bool) or not isinstance(segment_id, int) or not 0 < segment_id <= MAX_ID:
        return "id must be a positive integer"
    for field in (*EDITABLE, "endpoint", "type"):
        if field in record and not isinstance(record[field], str):
            return f"{field} must be a string"
    if "name" in record and not record["name"].strip():
        return "name must not be empty"
    if record.get("status", "active") not in STATUSES:
        return f"status must be one of {', '.join(STATUSES)}"
    if record.get("type", SEGMENT_TYPES[0]) not in SEGMENT_TYPES:
        return f"type must be one of {', '.join(SEGMENT_TYPES)}"
    if record.get("identityAttribute") is not None and not isinstance(record["identityAttribute"], str):
        return "identityAttribute must be a string or null"
    if record.get(HASHING) is not None and record[HASHING] not in IDENTITY_HASHINGS:
        return f"{HASHING} must be null or one of {', '.join(IDENTITY_HASHINGS)}"
    attributes = record.get("attributes", [])
    if not isinstance(attributes, list) or not all(isinstance(name, str) for name in attributes):
        return "attributes must be a list of strings"
    return None


async def upsert(conn: asyncpg.Connection, record: dict[str, Any]) -> list[str]:
    """Create or change one segment; the lines describing what changed (none: unchanged)."""
    segment_id = record["id"]
    await hold_segment(conn, segment_id)
    existing = await conn.fetchrow(QUERIES["meta_segment_lock"], segment_id, None)
    if existing is None:
        if "endpoint" not in record or "name" not in record:
            raise CommandFailed(f"segment {segment_id} does not exist: creating it needs its endpoint and name")
        owner = await endpoint_id(conn, record["endpoint"])
        if owner is None:
            raise CommandFailed(f"segment {segment_id}: there is no endpoint named {record['endpoint']!r}")
        if not await insert_segment(conn, segment_id, owner, record):
            raise CommandFailed(f"segment {segment_id} was created meanwhile; run the import again")
        created = {field: record[field] for field in ("endpoint", *EDITABLE, HASHING) if record.get(field) is not None}
        return [f"segment {segment_id}: created " + " ".join(f"{k}={v!r}" for k, v in created.items())]
    if record.get("endpoint", existing["endpoint_name"]) != existing["endpoint_name"]:
        raise CommandFailed(f"segment {segment_id} belongs to endpoint {existing['endpoint_name']!r}, "
                            f"not {record['endpoint']!r}; import does not move segments")
    lines = []
    try:
        if HASHING in record and record[HASHING] != existing["identity_hashing"]:
            await set_identity_hashing(conn, existing["endpoint_id"], segment_id, record[HASHING])
            lines.append(f"segment {segment_id}: {HASHING} {existing['identity_hashing']!r} -> {record[HASHING]!r}")
        before, after = await change_segment(conn, segment_id, None,
                                             {field: record[field] for field in EDITABLE if field in record})
    except GatewayError as exc:
        raise CommandFailed(exc.message) from None
    return lines + [f"segment {segment_id}: {field} {before[field]!r} -> {after[field]!r}"
                    for field in EDITABLE if before[field] != after[field]]


async def _import(args: argparse.Namespace, settings: Settings) -> int:
    records = read_records(args.file)
    changed, report = 0, []
    async with migrated_connection(settings, init=args.init) as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            for record in records:
                lines = await upsert(conn, record)
                changed += bool(lines)
                report += lines
            if not args.dry_run:  # setval is not transactional: only when committing
                await conn.execute(QUERIES["meta_segment_sequence"])
        except BaseException:
            await transaction.rollback()
            raise
        if args.dry_run:
            await transaction.rollback()
        else:
            await transaction.commit()
    for line in report:  # only once it is done: a failed import prints nothing but its error
        print(line)
    verb = "would change" if args.dry_run else "changed"
    print(f"{verb} {changed} of {len(records)} segment(s){' (dry run: nothing was changed)' if args.dry_run else ''}")
    return 0
