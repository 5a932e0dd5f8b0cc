"""REPLACE sessions: batches staged durably in PostgreSQL, committed atomically when all are in.

A session is keyed by (segment, T, ids, sourceEndpointID, sourceSegmentID) and owns one staging table.
A batch of an open session whose plan needs no lock COPYs straight into it; others go through ``incoming``.
Batches stage side by side, each in its own transaction, without the segment's lock when their header
adds nothing to the segment (else they take it, as every push does): a KEY SHARE lock on the session's row
keeps a commit or an expiry waiting until they end, and the row of (session, k) in replace_batches orders
two copies of batch k, the later one replacing what the earlier staged. After its own commit, a batch that
sees all T batches staged takes the segment's lock and the session's row and, if the session is still
open and complete, builds the new members table from the staged rows (index after the load) and swaps it
in by rename: readers see the old audience or the new one, never a mix. All state is in PostgreSQL, so the
batches of one share may reach different gateway processes, and a restart loses nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg

from gateway.ops import metrics
from gateway.audience.changefeed import declare_writes
from gateway.errors import NotFound
from gateway.ingest.upload import ColumnPlan, ColumnRules, Upload, plan_columns
from gateway.db.names import sql, staging_table
from gateway.ingest.apply import (batch_result, drop_suppressed, lock_and_register, lock_segment, stream_incoming,
                                  suppression_key)
from gateway.audience.segments import require_pushable
from gateway.db.queries import QUERIES
from gateway.ingest.history import BatchInfo, UploadEntry
from gateway.db.status import rows_affected

log = logging.getLogger(__name__)

STAGED_COLUMNS = ("batch", "ord", "identity", "attrs")  # what a batch COPYs straight into staging
MAX_TOUCH_INTERVAL = 1.0  # seconds: a session's last_batch_at may lag this much (or TTL/10) behind its batches


async def push_replace(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, batch: BatchInfo,
                       upload: Upload, header: list[str], rules: ColumnRules, streamed: ColumnPlan,
                       session_ttl: float, entry: UploadEntry) -> dict[str, Any]:
    """Stage the upload as batch k of its session (one transaction), then commit the session if complete.

    A batch whose session is open and whose plan is settled before its body streams (``_open_session``)
    COPYs its rows straight into the staging table; any other (the first batches of a share, a header
    that changes the segment's columns) streams into ``incoming`` and is appended from there.
    The batch's history row is written with the staging; the batch that commits the session marks its row
    ``replace_committed`` in the commit's transaction.
    """
    async with conn.transaction():
        await declare_writes(conn, endpoint_id)
        session_id = await _open_session(conn, endpoint_id, segment_id, batch, header, rules, streamed)
        if session_id is not None:
            upload_id, result = await _stage_streamed(conn, endpoint_id, segment_id, session_id, batch, upload,
                                                      streamed, session_ttl, entry)
        else:
            await stream_incoming(conn, upload, streamed, entry.rejects)
            plan = await _settle_plan(conn, endpoint_id, segment_id, header, rules, streamed, upload)
            await drop_suppressed(conn, endpoint_id, plan, upload)
            await entry.rejects.flush(conn)  # rows rejected under the lock (see lock_and_register)
            session_id, upload_id, result = await _stage(conn, endpoint_id, segment_id, batch, upload, plan,
                                                         session_ttl, entry)
    progress = await conn.fetchrow(QUERIES["replace_progress"], session_id)
    if progress is None or progress["staged"] < progress["total_batches"]:
        return result
    async with conn.transaction():
        await declare_writes(conn, endpoint_id)
        await lock_segment(conn, endpoint_id, segment_id)
        if not await conn.fetchval(QUERIES["replace_lock_for_commit"], session_id):
            return result  # another batch of this session committed it (or it expired) meanwhile
        result["replaceCommitted"] = True
        result["audienceSize"] = await _commit(conn, segment_id, session_id)
        await conn.execute(QUERIES["upload_mark_committed"], upload_id)
    return result


async def _segment_columns(conn: asyncpg.Connection, endpoint_id: int, segment_id: int) -> asyncpg.Record:
    """The segment's columns, unlocked; 404 or 409 when it takes no push."""
    row = await conn.fetchrow(QUERIES["replace_segment_columns"], segment_id, endpoint_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
    require_pushable(segment_id, row["status"], row["read_only"])
    return row


def _settled(row: asyncpg.Record, header: list[str], rules: ColumnRules, streamed: ColumnPlan) -> bool:
    """The streamed plan holds without the segment's lock: the segment's identity is fixed and the header
    adds no attribute (attributes only grow, so the positions read stay right)."""
    if row["identity_attribute"] is None:
        return False
    current = plan_columns(header, row["identity_attribute"], row["attributes"], rules, row["identity_hashing"])
    return current == streamed and list(current.attributes) == row["attributes"]


async def _open_session(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, batch: BatchInfo,
                        header: list[str], rules: ColumnRules, streamed: ColumnPlan) -> int | None:
    """The open session this batch may COPY straight into, KEY SHARE locked (it stays open, and its staging
    table stays, until this batch ends): None when there is none or the plan needs the segment's lock."""
    if not _settled(await _segment_columns(conn, endpoint_id, segment_id), header, rules, streamed):
        return None
    return await conn.fetchval(QUERIES["replace_find_open"], *_session_key(segment_id, batch))


async def _settle_plan(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, header: list[str],
                       rules: ColumnRules, streamed: ColumnPlan, upload: Upload) -> ColumnPlan:
    """The streamed plan, unlocked, when ``_settled``; else the segment's lock, held to the commit."""
    if _settled(await _segment_columns(conn, endpoint_id, segment_id), header, rules, streamed):
        return streamed
    return await lock_and_register(conn, endpoint_id, segment_id, header, rules, streamed, upload)


def _session_key(segment_id: int, batch: BatchInfo) -> tuple[Any, ...]:
    return segment_id, batch.total, batch.ids, batch.source_endpoint_id, batch.source_segment_id


async def _stage_streamed(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, session_id: int,
                          batch: BatchInfo, upload: Upload, plan: ColumnPlan, session_ttl: float,
                          entry: UploadEntry) -> tuple[int, dict[str, Any]]:
    """COPY the body straight into the session's staging table as batch k: ``(history row id, result)``.

    The rows are this transaction's until it commits: a failed body leaves nothing staged. A copy of
    batch k learns it is one only afterwards (``replace_record_batch``), then deletes what the earlier
    copy staged, never its own rows (``staging_clear_batch``).
    """
    schema, table = staging_table(session_id)
    while not upload.done:
        await conn.copy_to_table(table, schema_name=schema, columns=STAGED_COLUMNS, format="text",
                                 source=upload.records(plan, pause=entry.rejects.full, staged_batch=batch.number))
        await entry.rejects.flush(conn)
    await _segment_columns(conn, endpoint_id, segment_id)  # it may have been made inactive meanwhile
    await _drop_staged_suppressed(conn, endpoint_id, session_id, batch.number, upload, plan)
    await entry.rejects.flush(conn)
    staged_identities = (len(upload.identities) if upload.identities is not None else await conn.fetchval(
        sql("staging_batch_distinct_count", session_id=session_id), batch.number))
    result = batch_result(segment_id, upload, numAdded=staged_identities, replaceCommitted=False)
    await _record_batch(conn, session_id, batch.number)
    return await _touch(conn, session_id, session_ttl, entry, result), result


async def _drop_staged_suppressed(conn: asyncpg.Connection, endpoint_id: int, session_id: int, number: int,
                                  upload: Upload, plan: ColumnPlan) -> None:
    """What this batch staged whose identity is on the suppression list, dropped as invalid rows (as
    gateway.ingest.apply.drop_suppressed does for ``incoming``)."""
    query = sql("staging_drop_suppressed", session_id=session_id, key=suppression_key(plan, "t.identity"))
    for row in await conn.fetch(query, endpoint_id, number):
        upload.suppress(row["ord"], row["attrs"])
        if upload.identities is not None:
            upload.identities.discard(row["identity"])


async def _stage(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, batch: BatchInfo, upload: Upload,
                 plan: ColumnPlan, session_ttl: float, entry: UploadEntry) -> tuple[int, int, dict[str, Any]]:
    """Stage ``incoming`` as batch k: ``(session id, history row id, result)``.

    Without an open session of its key, the batch opens one, even when a session of that key committed
    moments ago: nothing in an Exchange request tells the next run of a share from a retry, and a REPLACE
    always replaces (a re-sent batch whose share is over opens a session that completes or expires).
    """
    staged_identities = await conn.fetchval(sql("incoming_distinct_count", segment_id=segment_id, **plan.sql_names()))
    result = batch_result(segment_id, upload, numAdded=staged_identities, replaceCommitted=False)
    key = _session_key(segment_id, batch)
    session_id = await conn.fetchval(QUERIES["replace_find_open"], *key)
    if session_id is None:
        # Opening a session is serialised by the segment's lock: a batch that waited finds the one opened.
        await lock_segment(conn, endpoint_id, segment_id)
        session_id = await conn.fetchval(QUERIES["replace_find_open"], *key)
    if session_id is None:
        session_id = await conn.fetchval(QUERIES["replace_open"], *key)
        await conn.execute(sql("staging_create", segment_id=segment_id, session_id=session_id))

    await _record_batch(conn, session_id, batch.number)
    await conn.execute(sql("staging_add_batch", session_id=session_id, **plan.sql_names()), batch.number)
    return session_id, await _touch(conn, session_id, session_ttl, entry, result), result


async def _record_batch(conn: asyncpg.Connection, session_id: int, number: int) -> None:
    """Batch k is staged by this transaction: a copy of k that staged before it is undone (waits for a
    copy still staging to end first)."""
    if await conn.fetchval(QUERIES["replace_record_batch"], session_id, number):
        await conn.execute(sql("staging_clear_batch", session_id=session_id), number)  # a retry


async def _touch(conn: asyncpg.Connection, session_id: int, session_ttl: float, entry: UploadEntry,
                 result: dict[str, Any]) -> int:
    """The session's last batch time and the batch's history row; returns the row's id."""
    return await conn.fetchval(QUERIES["replace_touch"], session_id, min(MAX_TOUCH_INTERVAL, session_ttl / 10),
                               entry.row(result))


async def _commit(conn: asyncpg.Connection, segment_id: int, session_id: int) -> int:
    """Build the new audience from the staged batches and swap it in; returns its size.

    Most shares repeat no identity: the staging table then takes the primary key and becomes the members
    table itself. When the key fails, the members table is built with DISTINCT ON (a later batch, then a
    later row, wins).
    """
    started = time.perf_counter()
    await conn.execute(QUERIES["replace_build_begin"])
    try:
        async with conn.transaction():
            for step in ("replace_adopt_staging", "replace_adopt_staging_move", "replace_adopt_staging_rename"):
                await conn.execute(sql(step, segment_id=segment_id, session_id=session_id))
        size = await conn.fetchval(sql("replace_count_members", segment_id=segment_id, session_id=session_id))
    except asyncpg.UniqueViolationError:
        status = await conn.execute(sql("replace_build_members", segment_id=segment_id, session_id=session_id))
        await conn.execute(sql("replace_index_members", segment_id=segment_id, session_id=session_id))
        size = rows_affected(status)
    await conn.execute(sql("replace_drop_members", segment_id=segment_id, session_id=session_id))
    await conn.execute(sql("replace_swap_members", segment_id=segment_id, session_id=session_id))
    await conn.execute(sql("replace_rename_pkey", segment_id=segment_id, session_id=session_id))
    await conn.execute(sql("staging_drop", segment_id=segment_id, session_id=session_id))
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
            await conn.execute(sql("staging_drop", segment_id=row["segment_id"], session_id=row["id"]))
            await conn.execute(QUERIES["replace_mark_expired"], row["id"])
            expired += 1
            metrics.REPLACE_EXPIRIES.inc()
            log.info("replace session %d of segment %d expired", row["id"], row["segment_id"])
    await pool.execute(QUERIES["replace_forget_old"], session_ttl)
    return expired
