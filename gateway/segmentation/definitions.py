"""Segment definitions: a PQL expression over the profiles of its sources, and the audience it owns.

Creating a definition creates, in the same transaction, its audience: a segment of type "Queries" named
after it (kept in step on rename), whose columns are the sources' merged profile attributes; segment jobs
fill it. Deleting the definition soft-deletes the audience (gateway.audience.metadata). Names are unique per
endpoint among live definitions, compared by ``fold_name``. An expression is checked when it is stored:
it parses, every attribute it names is in a source (else 400 naming it and the sources), every
``inSegment`` names a segment of the same endpoint, and it compiles. No HTTP here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.audience.changefeed import declare_writes
from gateway.audience.metadata import change_segment
from gateway.db.queries import QUERIES
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.ids import parse_int
from gateway.ingest.csvparse import fold_name
from gateway.segmentation import insegment, pql
from gateway.segmentation.compiler import compile_predicate
from gateway.segmentation.sources import MERGE_POLICY, Profiles, resolve, show_sources

EXPRESSION_TYPE = "PQL"
EXPRESSION_FORMAT = "pql/text"
UNIQUE_NAME = "segment_definitions_name"  # the index that keeps live names unique per endpoint
# The list's sort fields (``sort=updateTime:desc,name:asc``) and the column each reads.
SORT_FIELDS = {"id": "id", "name": "name_key", "creationTime": "created_at", "updateTime": "updated_at"}
DEFAULT_SORT = "updateTime:desc"


@dataclasses.dataclass(frozen=True)
class NewDefinition:
    name: str
    description: str
    expression: str
    sources: list[int] | None  # None: "*"
    batch_enabled: bool = True


@dataclasses.dataclass(frozen=True)
class Checked:
    """An expression that may be stored with its sources."""
    attributes: list[str]  # the attributes it names, as written, first-seen order
    profiles: Profiles


@dataclasses.dataclass(frozen=True)
class DefinitionPage:
    rows: list[asyncpg.Record]
    total: int


def not_found(definition_id: int | str) -> NotFound:
    return NotFound(f"segment definition {definition_id} does not exist", code="definition_not_found")


def parse_definition_id(text: str) -> int:
    """A path's definition id; anything that is not a positive bigint is simply not found."""
    definition_id = parse_int(text)
    if definition_id is None:
        raise not_found(repr(text))
    return definition_id


def expression_error(exc: pql.ExpressionError) -> BadRequest:
    """The 400 of an expression that does not parse or compile, with the 0-based character position."""
    return BadRequest(exc.message, code="invalid_expression", details={"position": exc.position})


def parse_expression(text: str) -> Any:
    try:
        return pql.parse(text)
    except pql.ExpressionError as exc:
        raise expression_error(exc) from None


def _sources_named(profiles: Profiles, ids: Sequence[int] | None) -> str:
    listed = ", ".join(f"{source.segment_id} ({', '.join(source.attributes) or 'no attributes yet'})"
                       for source in profiles.sources)
    if ids is None:
        return f'the sources "*" (segments {listed})' if listed else 'the sources "*" (no Contact List or Database yet)'
    return f"the sources (segments {listed})"


async def _segment_tables(conn: asyncpg.Connection, endpoint_id: int, names: Sequence[str],
                          hashing: str | None) -> dict[str, str]:
    """What each ``inSegment`` argument reads (gateway.segmentation.insegment); 400 ``unknown_segment`` if it
    names no segment of this endpoint (another endpoint's is answered like a missing one),
    ``mixed_identity_hashing`` if it stores identities otherwise than the sources (``hashing``)."""
    in_segments = await insegment.segment_tables(conn, endpoint_id, names)
    if in_segments.unknown:
        name = in_segments.unknown[0]
        raise BadRequest(f'inSegment("{name}"): segment {name} does not exist', code="unknown_segment")
    in_segments.require_hashing(hashing)
    return in_segments.tables


async def check(conn: asyncpg.Connection, endpoint_id: int, expression: str, sources: list[int] | None) -> Checked:
    """Whether ``expression`` over ``sources`` may be stored (see the module docstring); 400 otherwise:
    ``invalid_expression`` (with ``position``), ``invalid_sources``, ``unknown_attribute`` (naming it and the
    sources, with its position when the compiler gives one), ``unknown_segment``."""
    node = parse_expression(expression)
    profiles = await resolve(conn, endpoint_id, sources)
    used = pql.attributes_used(node)
    unknown = [name for name in used if profiles.index(name) is None]
    tables = await _segment_tables(conn, endpoint_id, pql.segments_used(node), profiles.identity_hashing)
    position: int | None = None
    try:
        compile_predicate(node, attribute_index=profiles.index, segment_tables=tables, now=dt.datetime.now(dt.UTC))
    except pql.ExpressionError as exc:
        if not unknown:
            raise expression_error(exc) from None
        position = exc.position
    if unknown:
        raise BadRequest(f"attribute {unknown[0]!r} is in none of {_sources_named(profiles, sources)}",
                         code="unknown_attribute", details={} if position is None else {"position": position})
    return Checked(used, profiles)


async def create_definition(conn: asyncpg.Connection, endpoint_id: int, new: NewDefinition) -> asyncpg.Record:
    """Check and store the definition, and create its audience in the same transaction; 409
    ``duplicate_name`` if a live definition of the endpoint has the name (any case)."""
    checked = await check(conn, endpoint_id, new.expression, new.sources)
    async with conn.transaction():
        await declare_writes(conn, endpoint_id)
        audience_id = await conn.fetchval(QUERIES["definition_audience_insert"], endpoint_id, new.name,
                                          new.description, checked.profiles.identity_attribute,
                                          list(checked.profiles.attributes), checked.profiles.identity_hashing)
        try:
            return await conn.fetchrow(QUERIES["definition_insert"], endpoint_id, new.name, fold_name(new.name),
                                       new.description, new.expression, new.sources, new.batch_enabled,
                                       audience_id)
        except asyncpg.UniqueViolationError as exc:
            raise _duplicate(new.name, exc) from None


def _duplicate(name: str, exc: asyncpg.UniqueViolationError) -> Exception:
    if exc.constraint_name != UNIQUE_NAME:
        return exc
    return Conflict(f"a segment definition named {name!r} exists already (names are compared in any case)",
                    code="duplicate_name")


async def get_definition(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int,
                         definition_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["definition_get"], definition_id, endpoint_id)
    if row is None:
        raise not_found(definition_id)
    return row


async def get_definitions(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int,
                          ids: Sequence[int]) -> dict[int, asyncpg.Record]:
    """The endpoint's live definitions among ``ids``, by id (missing ones are left out)."""
    return {row["id"]: row for row in await conn.fetch(QUERIES["definition_many"], list(ids), endpoint_id)}


async def change_definition(conn: asyncpg.Connection, endpoint_id: int, definition_id: int,
                            changes: dict[str, Any]) -> asyncpg.Record:
    """Change the fields in ``changes`` (a subset of name, description, expression, sources, batch_enabled;
    validated by the caller) and no other; a new expression or sources is checked as on create. The
    audience's name and description follow. Nothing is written when nothing differs."""
    async with conn.transaction():
        await declare_writes(conn, endpoint_id)
        before = await conn.fetchrow(QUERIES["definition_lock"], definition_id, endpoint_id)
        if before is None:
            raise not_found(definition_id)
        after = {field: changes.get(field, before[field])
                 for field in ("name", "description", "expression", "sources", "batch_enabled")}
        if all(after[field] == before[field] for field in after):
            return before
        if "expression" in changes or "sources" in changes:
            await check(conn, endpoint_id, after["expression"], after["sources"])
        try:
            row = await conn.fetchrow(QUERIES["definition_update"], definition_id, after["name"],
                                      fold_name(after["name"]), after["description"], after["expression"],
                                      after["sources"], after["batch_enabled"])
        except asyncpg.UniqueViolationError as exc:
            raise _duplicate(after["name"], exc) from None
        if (after["name"], after["description"]) != (before["name"], before["description"]):
            await change_segment(conn, before["audience_segment_id"], endpoint_id,
                                 {"name": after["name"], "description": after["description"]})
        return row


async def delete_definition(conn: asyncpg.Connection, endpoint_id: int, definition_id: int) -> asyncpg.Record:
    """Remove the definition (answered as missing from now on) and soft-delete its audience."""
    async with conn.transaction():
        await declare_writes(conn, endpoint_id)
        if await conn.fetchrow(QUERIES["definition_lock"], definition_id, endpoint_id) is None:
            raise not_found(definition_id)
        row = await conn.fetchrow(QUERIES["definition_delete"], definition_id)
        await change_segment(conn, row["audience_segment_id"], endpoint_id, {"status": "deleted"})
        return row


def parse_sort(text: str | None) -> list[tuple[str, bool]]:
    """``field:asc|desc`` pairs, comma-separated (``asc`` when the direction is left out); 400
    ``invalid_sort``. Returns (field, descending) pairs."""
    keys: list[tuple[str, bool]] = []
    for part in (text or DEFAULT_SORT).split(","):
        field, _, direction = part.strip().partition(":")
        if field not in SORT_FIELDS or direction not in ("", "asc", "desc") or field in dict(keys):
            raise BadRequest(f"sort must be field:asc or field:desc, comma-separated, fields among "
                             f"{', '.join(SORT_FIELDS)} (each once), not {text!r}", code="invalid_sort")
        keys.append((field, direction == "desc"))
    return keys


def show_sort(keys: Sequence[tuple[str, bool]]) -> str:
    return ",".join(f"{field}:{'desc' if descending else 'asc'}" for field, descending in keys)


async def definition_page(conn: asyncpg.Connection, endpoint_id: int, *, name: str | None,
                          sort: Sequence[tuple[str, bool]], start: int, limit: int) -> DefinitionPage:
    """Definitions ``start`` to ``start + limit`` (0-based) of the endpoint's, in ``sort`` order and then by
    id, those whose name contains ``name`` (any case) only. An endpoint has few definitions: the sort keys
    of all of them are read and sorted here (any combination of fields), the page's rows read by id."""
    keys = list(await conn.fetch(QUERIES["definition_sort_keys"], endpoint_id,
                                 None if name is None else fold_name(name)))
    keys.sort(key=lambda row: row["id"])
    for field, descending in reversed(sort):  # stable sorts, least significant key first
        keys.sort(key=lambda row: row[SORT_FIELDS[field]], reverse=descending)
    ids = [row["id"] for row in keys[start:start + limit]]
    rows = await get_definitions(conn, endpoint_id, ids)
    return DefinitionPage([rows[i] for i in ids if i in rows], len(keys))


def epoch_ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def describe(row: asyncpg.Record) -> dict[str, Any]:
    """A definition as the ``/api/segment/definitions`` routes show it (the hosted service's field names)."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "description": row["description"],
        "expression": {"type": EXPRESSION_TYPE, "format": EXPRESSION_FORMAT, "value": row["expression"]},
        "sources": show_sources(row["sources"]),
        "mergePolicy": MERGE_POLICY,
        "evaluationInfo": {"batch": {"enabled": row["batch_enabled"]}, "continuous": {"enabled": False},
                           "synchronous": {"enabled": False}},
        "audienceSegmentId": str(row["audience_segment_id"]),
        "creationTime": epoch_ms(row["created_at"]),
        "updateTime": epoch_ms(row["updated_at"]),
        "updateEpoch": int(row["updated_at"].timestamp()),
    }
