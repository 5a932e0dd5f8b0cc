"""REPLACE sessions: batches staged durably in PostgreSQL, committed atomically when all are in.

A session is keyed by (segment, T, ids, sourceEndpointID, sourceSegmentID) and owns one staging table.
Batch k sent again replaces what k staged. When every k in 1..T is staged, the same transaction builds
the new members table from the staged rows (DISTINCT ON, index after the load) and swaps it in by
rename: readers see the old audience or the new one, never a mix. All state is in PostgreSQL, so the
batches of one share may reach different gateway processes, and a restart loses nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg
import orjson

from gateway import metrics
from gateway.ingest import ColumnPlan, Upload
from gateway.members import BatchInfo, batch_result, sql
from gateway.sqlfiles import QUERIES
from gateway.uploads import UploadEntry

log = logging.getLogger(__name__)


async def stage_replace_batch(conn: asyncpg.Connection, segment_id: int, batch: BatchInfo, upload: Upload,
                              plan: ColumnPlan, session_ttl: float, entry: UploadEntry) -> dict[str, Any]:
    """Stage ``incoming`` as batch k of its session (the segment row is locked); commit when complete.

    Its history row says whether it completed the share; a late retry gets one too (``late_retry``, with
    the recorded answer's counts).
    """
    key = (segment_id, batch.total, batch.ids, batch.source_endpoint_id, batch.source_segment_id)
    session_id = await conn.fetchval(QUERIES["replace_find_open"], *key)
    if session_id is None:
        recorded = await conn.fetchval(QUERIES["replace_find_committed_batch"], *key, batch.number,
                                       upload.body_hash, session_ttl)
        if recorded is not None:
            log.info("late retry of batch %d/%d for segment %d: answering the recorded response",
                     batch.number, batch.total, segment_id)
            result = orjson.loads(recorded)
            await entry.record(conn, result, late_retry=True, replace_committed=result.get("replaceCommitted"))
            return result
        session_id = await conn.fetchval(QUERIES["replace_open"], *key)
        await conn.execute(sql("staging_create", segment_id, session_id))

    if await conn.fetchval(QUERIES["replace_batch_staged"], session_id, batch.number):
        await conn.execute(sql("staging_clear_batch", segment_id, session_id), batch.number)  # a retry
    await conn.execute(sql("staging_add_batch", segment_id, session_id, plan), batch.number)
    staged_identities = await conn.fetchval(sql("incoming_distinct_count", segment_id, plan=plan))
    result = batch_result(segment_id, upload, numAdded=staged_identities, replaceCommitted=False)
    await conn.execute(QUERIES["replace_record_batch"], session_id, batch.number, upload.body_hash,
                       orjson.dumps(result).decode())
    progress = await conn.fetchrow(QUERIES["replace_touch"], session_id, entry.row(result))
    if progress["staged"] < progress["total_batches"]:
        return result

    result["replaceCommitted"] = True
    result["audienceSize"] = await _commit(conn, segment_id, session_id)
    await conn.execute(QUERIES["replace_update_batch_response"], session_id, batch.number,
                       orjson.dumps(result).decode())
    return result


async def _commit(conn: asyncpg.Connection, segment_id: int, session_id: int) -> int:
    """Build the new audience from the staged batches and swap it in; returns its size."""
    started = time.perf_counter()
    await conn.execute(QUERIES["replace_build_begin"])
    status = await conn.execute(sql("replace_build_members", segment_id, session_id))
    size = int(status.split()[-1])
    await conn.execute(sql("replace_index_members", segment_id, session_id))
    await conn.execute(sql("replace_drop_members", segment_id, session_id))
    await conn.execute(sql("replace_swap_members", segment_id, session_id))
    await conn.execute(sql("replace_rename_pkey", segment_id, session_id))
    await conn.execute(sql("staging_drop", segment_id, session_id))
    await conn.execute(QUERIES["replace_mark_committed"], session_id)
    await conn.execute(QUERIES["segment_set_member_count"], segment_id, size)
    metrics.REPLACE_COMMITS.inc()
    log.info("replace session %d committed: segment %d now has %d members (built in %.2f s)", session_id,
             segment_id, size, time.perf_counter() - started)
    return size


async def expire_idle_sessions(pool: asyncpg.Pool, session_ttl: float) -> int:
    """Expire open sessions idle for longer than the TTL: staged rows purged, live audience untouched.

    Any process may run this; each session is re-checked under its segment's lock.
    """
    expired = 0
    for row in await pool.fetch(QUERIES["replace_expired_sessions"], session_ttl):
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(QUERIES["replace_lock_session_for_expiry"], row["id"], session_ttl) is None:
                continue
            await conn.execute(sql("staging_drop", row["segment_id"], row["id"]))
            await conn.execute(QUERIES["replace_mark_expired"], row["id"])
            expired += 1
            metrics.REPLACE_EXPIRIES.inc()
            log.info("replace session %d of segment %d expired", row["id"], row["segment_id"])
    await pool.execute(QUERIES["replace_forget_old"], session_ttl)
    return expired
