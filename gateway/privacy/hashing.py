"""A segment's ``identityHashing``: set at creation (POST /v1/segments) or changed (PATCH /api/segments/{id})
while the segment holds no data; once it holds members or staged REPLACE batches, they were normalised by
one rule and a change would leave them unmatched (409)."""

from __future__ import annotations

import asyncpg

from gateway.audience.changefeed import declare_writes
from gateway.audience.metadata import not_found
from gateway.audience.segments import hold_segment
from gateway.db.queries import QUERIES
from gateway.errors import Conflict


async def set_identity_hashing(conn: asyncpg.Connection, endpoint_id: int, segment_id: int,
                               hashing: str | None) -> None:
    """Change the setting (None: identities stored as sent) under the segment's lock; nothing when it is
    already so; 409 ``segment_not_empty`` when the segment holds data."""
    async with conn.transaction():
        await declare_writes(conn, endpoint_id)
        await hold_segment(conn, segment_id)  # waits for the pushes applying
        row = await conn.fetchrow(QUERIES["segment_hashing_lock"], segment_id, endpoint_id)
        if row is None:
            raise not_found(segment_id)
        if row["identity_hashing"] == hashing:
            return
        if row["holds_data"]:
            raise Conflict(f"segment {segment_id} holds members or staged REPLACE batches: its identityHashing "
                           "cannot change while it holds data", code="segment_not_empty")
        await conn.execute(QUERIES["segment_set_hashing"], segment_id, hashing)
