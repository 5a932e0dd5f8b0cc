"""Segment metadata and status, as the ``/api`` routes and the ``segments`` commands manage it. No HTTP here.

Status: ``active`` (as created); ``inactive`` (kept, readable, not listed to Exchange, refuses pushes);
``deleted`` (404 on every ``/v1`` route, still shown here). A deleted segment keeps its members for a
grace period (``GATEWAY_DELETE_GRACE``), then a sweeper purges them (members table, open REPLACE sessions,
export data); the row stays, so the segment remains visible as deleted. Until it is purged, setting its
status back to active or inactive un-deletes it with its audience intact; after, that is refused (409):
its audience is gone.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import asyncpg

from gateway.audience.changefeed import Page, PageRequest, iso, read_page
from gateway.audience.segments import hold_segment
from gateway.errors import Conflict, NotFound
from gateway.db.names import sql
from gateway.db.queries import QUERIES

log = logging.getLogger(__name__)

STATUSES = ("active", "inactive", "deleted")
EDITABLE = ("name", "description", "category", "status")  # what PATCH and import may change


@dataclasses.dataclass(frozen=True)
class SegmentFilters:
    """``GET /api/segments`` filters; None: not filtered."""

    status: str | None = None
    type: str | None = None
    text: str | None = None  # contained in the name or the description, any case
    updated_since: Any = None  # a datetime: metadata or membership changed after it


def describe(row: asyncpg.Record) -> dict[str, Any]:
    """A segment as ``/api`` and ``segments export`` show it."""
    return {
        "id": row["id"],
        "endpoint": row["endpoint_name"],
        "name": row["name"],
        "description": row["description"],
        "category": row["category"],
        "type": row["type"],
        "status": row["status"],
        "identityAttribute": row["identity_attribute"],
        "identityHashing": row["identity_hashing"],
        "attributes": list(row["attributes"]),
        "memberCount": row["member_count"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
        "metadataUpdatedAt": iso(row["metadata_updated_at"]),
        "lastUploadAt": iso(row["last_upload_at"]),
        "deletedAt": iso(row["deleted_at"]),
        "purgedAt": iso(row["purged_at"]),
    }


def mapping(row: asyncpg.Record) -> dict[str, Any]:
    """A segment as Audience Manager's destination mappings show it."""
    return {"destinationMappingId": row["id"], "elementName": row["name"],
            "elementDescription": row["description"], "elementStatus": row["status"],
            "updatedAt": iso(row["metadata_updated_at"])}


def not_found(segment_id: int) -> NotFound:
    return NotFound(f"segment {segment_id} does not exist", code="segment_not_found")


async def segment_page(conn: asyncpg.Connection, endpoint_id: int, filters: SegmentFilters,
                       page: PageRequest) -> Page:
    return await read_page(conn, endpoint_id, page, lambda after, limit: conn.fetch(
        QUERIES["meta_segment_page"], endpoint_id, filters.status, filters.type, filters.text,
        filters.updated_since, after, limit))


async def mapping_page(conn: asyncpg.Connection, endpoint_id: int, updated_since: Any, page: PageRequest) -> Page:
    return await read_page(conn, endpoint_id, page, lambda after, limit: conn.fetch(
        QUERIES["meta_mapping_page"], endpoint_id, updated_since, after, limit))


async def get_any_segment(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int,
                          segment_id: int) -> asyncpg.Record:
    """The segment whatever its status; another endpoint's is answered like a missing one."""
    row = await conn.fetchrow(QUERIES["meta_segment_get"], segment_id, endpoint_id)
    if row is None:
        raise not_found(segment_id)
    return row


async def change_segment(conn: asyncpg.Connection, segment_id: int, endpoint_id: int | None,
                         changes: dict[str, str]) -> tuple[asyncpg.Record, asyncpg.Record]:
    """Apply ``changes`` (a subset of EDITABLE, validated by the caller) under the segment's lock.

    Returns the row before and after; nothing is written (no change time moves) when nothing differs.
    ``endpoint_id`` None: any endpoint's segment (the CLI).
    """
    async with conn.transaction():
        await hold_segment(conn, segment_id)  # waits for the ADD and REMOVE batches applying
        before = await conn.fetchrow(QUERIES["meta_segment_lock"], segment_id, endpoint_id)
        if before is None:
            raise not_found(segment_id)
        wanted = {field: changes.get(field, before[field]) for field in EDITABLE}
        if all(wanted[field] == before[field] for field in EDITABLE):
            return before, before
        if before["purged_at"] is not None and wanted["status"] != "deleted":
            raise Conflict(f"segment {segment_id} was deleted and its members purged; it cannot be restored",
                           code="segment_purged")
        await conn.execute(QUERIES["meta_segment_update"], segment_id, *(wanted[field] for field in EDITABLE))
        after = await conn.fetchrow(QUERIES["meta_segment_lock"], segment_id, endpoint_id)
    return before, after


async def insert_segment(conn: asyncpg.Connection, segment_id: int, endpoint_id: int, fields: dict[str, Any]) -> bool:
    """Create a segment with a chosen id (import); False when that id exists already. The caller moves the
    id sequence past it (``meta_segment_sequence``) before committing."""
    created = await conn.fetchval(
        QUERIES["meta_segment_insert"], segment_id, endpoint_id, fields["name"], fields.get("description", ""),
        fields.get("category", ""), fields.get("type", "Contact Lists"), fields.get("status", "active"),
        fields.get("identityAttribute"), fields.get("attributes", []), fields.get("identityHashing"))
    return created is not None


async def purge_segment(conn: asyncpg.Connection, segment_id: int, grace_seconds: float) -> bool:
    """Drop a deleted segment's members, staged REPLACE batches and export data, once it has been deleted
    for ``grace_seconds`` (0: now). False if it is not (or no longer) due: re-checked under its lock."""
    async with conn.transaction():
        if await conn.fetchval(QUERIES["purge_lock"], segment_id, grace_seconds) is None:
            return False
        await conn.execute(sql("replace_drop_members", segment_id=segment_id))
        for session_id in await conn.fetch(QUERIES["purge_open_sessions"], segment_id):
            await conn.execute(sql("staging_drop", session_id=session_id["id"]))
        for job in await conn.fetch(QUERIES["purge_jobs"], segment_id):
            await conn.execute(sql("job_snapshot_drop", job_id=job["id"]))
        await conn.execute(QUERIES["purge_mark"], segment_id)
    log.info("segment %d purged", segment_id)
    return True


async def purge_deleted(pool: asyncpg.Pool, grace_seconds: float) -> int:
    """The sweeper: purge segments deleted more than ``grace_seconds`` ago (any process may run it)."""
    purged = 0
    for row in await pool.fetch(QUERIES["purge_candidates"], grace_seconds):
        async with pool.acquire() as conn:
            purged += await purge_segment(conn, row["id"], grace_seconds)
    return purged
