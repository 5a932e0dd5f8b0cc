"""Segments (audiences) as stored rows: create, list, get. No HTTP here."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import asyncpg
import orjson

from gateway.ids import parse_int
from gateway.db.csvcopy import columns_sql
from gateway.db.names import sql
from gateway.errors import Conflict, NotFound, NotImplementedYet
from gateway.db.queries import QUERIES

SEGMENT_TYPES = ("Contact Lists", "Databases", "Queries")
DEFAULT_TYPE = "Contact Lists"


@dataclasses.dataclass(frozen=True)
class NewSegment:
    name: str
    description: str = ""
    category: str = ""
    type: str = DEFAULT_TYPE
    identity_hashing: str | None = None  # identityHashing (gateway.ingest.upload.IDENTITY_HASHINGS)

    def request_hash(self) -> bytes:
        fields = dataclasses.asdict(self)
        if fields["identity_hashing"] is None:
            del fields["identity_hashing"]  # the hash of a body without it stays what it was before it existed
        return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).digest()


def parse_segment_id(text: str) -> int:
    """A path's segment id; anything that is not a positive bigint is simply not found."""
    segment_id = parse_int(text)
    if segment_id is None:
        raise NotFound(f"segment {text!r} does not exist", code="segment_not_found")
    return segment_id


async def create_segment(conn: asyncpg.Connection, endpoint_id: int, new: NewSegment,
                         idempotency_key: str | None = None) -> dict[str, Any]:
    """Create a segment; with an idempotency key, the same key and body within 24 h answer the first result."""
    if idempotency_key is None:
        segment_id = await conn.fetchval(QUERIES["segment_insert"], endpoint_id, new.name, new.description,
                                         new.category, new.type, new.identity_hashing)
        return {"segmentId": str(segment_id)}
    request_hash = new.request_hash()
    async with conn.transaction():
        claimed = await conn.fetchval(QUERIES["idempotency_claim"], endpoint_id, idempotency_key, request_hash)
        if not claimed:
            # Another request holds or held this key; FOR UPDATE waits for it to finish first.
            previous = await conn.fetchrow(QUERIES["idempotency_get"], endpoint_id, idempotency_key)
            if previous["fresh"]:
                if previous["request_hash"] != request_hash:
                    raise Conflict("this Idempotency-Key was used with a different body",
                                   code="idempotency_key_reused")
                return orjson.loads(previous["response"])
            await conn.execute(QUERIES["idempotency_restart"], endpoint_id, idempotency_key, request_hash)
        segment_id = await conn.fetchval(QUERIES["segment_insert"], endpoint_id, new.name, new.description,
                                         new.category, new.type, new.identity_hashing)
        result = {"segmentId": str(segment_id)}
        await conn.execute(QUERIES["idempotency_store"], endpoint_id, idempotency_key, orjson.dumps(result).decode())
        return result


async def list_segments(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(QUERIES["segment_list"], endpoint_id)
    return [{"id": row["id"], "name": row["name"], "type": row["type"]} for row in rows]


async def hold_segment(conn: asyncpg.Connection, segment_id: int, *, shared: bool = False) -> None:
    """Take the segment's apply lock until the transaction ends, before its row lock. Shared: ADD and
    REMOVE batches, side by side (their members' row locks order them per identity). Exclusive: a REPLACE
    commit or session opening, a push registering columns, a metadata change; each waits for the batches
    applying and they wait for it. A lock in PostgreSQL, so it holds across gateway processes."""
    await conn.execute(QUERIES["segment_apply_shared" if shared else "segment_apply_exclusive"], segment_id)


QUERIES_TYPE = "Queries"  # a segment definition's audience (gateway.segmentation.definitions)


def require_pushable(segment_id: int, status: str, read_only: bool) -> None:
    """A segment definition's audience (``read_only``: the queries that feed this say so) is filled by
    segment jobs only: it never takes pushed data (409). A Queries segment Exchange created on ``/v1`` is
    an ordinary audience. An inactive segment takes no data (409) until it is active again. Reads of both
    still answer."""
    if read_only:
        raise Conflict(f"segment {segment_id} is a segment definition's audience: segment jobs fill it, it "
                       "takes no pushed data", code="segment_read_only")
    if status == "inactive":
        raise Conflict(f"segment {segment_id} is inactive: it takes no data until it is active again",
                       code="segment_inactive")


async def get_segment(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, segment_id: int) -> asyncpg.Record:
    """The segment's row, or NotFound (another endpoint's segment is answered exactly like a missing one)."""
    row = await conn.fetchrow(QUERIES["segment_get"], segment_id, endpoint_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
    return row


async def get_pushable_segment(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int,
                               segment_id: int) -> asyncpg.Record:
    """The segment, checked before a push reads its body: 404 if missing or deleted, 409 if inactive or a
    Queries audience."""
    row = await get_segment(conn, endpoint_id, segment_id)
    require_pushable(segment_id, row["status"], row["read_only"])
    return row


async def direct_export(conn: asyncpg.Connection, endpoint_id: int, segment_id: int,
                        limit: int) -> tuple[str, list[str]]:
    """The query and header of a direct pull (run it in the same transaction: the query share-locks the
    segment's row first). A segment with 0 or more than ``limit`` members is exported by a job instead."""
    row = await conn.fetchrow(QUERIES["segment_export_info"], segment_id, endpoint_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
    if not 0 < row["member_count"] <= limit:
        raise NotImplementedYet(
            f"segment {segment_id} has {row['member_count']} members; direct export serves 1 to {limit}: "
            "create an ExportSegmentData job", code="use_export_job")
    attributes = row["attributes"]
    return sql("export_segment_rows", segment_id=segment_id, columns=columns_sql(len(attributes))), attributes
