"""Export jobs (kind ``ExportSegmentData``): created by ``POST /v1/jobs``, run by the job queue
(gateway.jobs.queue), which claims, leases, takes over and cancels them as it does every kind.

What is particular to exports: the job materialises the audience as it is at that moment into
``exports.job_<id>`` with one ``CREATE TABLE … AS`` (a consistent snapshot: later pushes do not show),
completes in the same transaction as the snapshot, keeps it until ``GATEWAY_EXPORT_TTL`` runs out (a cancel
drops it at once), and learns its download's exact length lazily.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import asyncpg

from gateway.audience.changefeed import declare_writes
from gateway.db.csvcopy import columns_sql, csv_length
from gateway.db.names import sql, table_names
from gateway.db.queries import QUERIES
from gateway.errors import NotFound
from gateway.ids import parse_int
from gateway.jobs import queue
from gateway.ops import metrics

log = logging.getLogger(__name__)

JOB_TYPE = "ExportSegmentData"


def failure_reason(exc: BaseException) -> str:
    """The job's ``reason`` for an unexpected failure: plain words for Exchange and the people reading
    ``jobs.reason``; the driver's message, the SQL and the traceback go to the log only."""
    if isinstance(exc, asyncpg.PostgresError):
        return "export failed: the database could not copy the segment's audience; the gateway's log has the details"
    return "export failed: internal error; the gateway's log has the details"


def unknown_job(job_id: str) -> NotFound:
    """Another endpoint's job is answered exactly like one that does not exist."""
    number = parse_int(job_id, 0)
    shown: Any = job_id if number is None else number
    return NotFound(f"job {job_id} does not exist", code="job_not_found",
                    extra={"result": {"id": shown, "status": "unknown"}})


def parse_job_id(text: str) -> int:
    job_id = parse_int(text)
    if job_id is None:
        raise unknown_job(text)
    return job_id


async def create_job(conn: asyncpg.Connection, endpoint_id: int, segment_id: int) -> dict[str, int]:
    row = await queue.enqueue(conn, EXPORT, endpoint_id, segment_id)
    return {"jobId": row["id"], "jobDataId": row["data_id"]}


async def get_job(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, job_id: int) -> asyncpg.Record:
    row = await queue.get(conn, EXPORT, endpoint_id, job_id)
    if row is None:
        raise unknown_job(str(job_id))
    return row


async def cancel_job(conn: asyncpg.Connection, endpoint_id: int, job_id: int) -> bool:
    """Cancel an export job and drop its data; False if it had already ended (error or canceled)."""
    if await queue.cancel(conn, EXPORT, endpoint_id, job_id):
        return True
    await get_job(conn, endpoint_id, job_id)  # 404 if it is not this endpoint's
    return False


async def drop_snapshot(conn: asyncpg.Connection, job_id: int) -> None:
    """Drop the job's data; its downloads then answer 410."""
    await conn.execute(sql("job_snapshot_drop", job_id=job_id))
    await conn.execute(QUERIES["job_mark_dropped"], job_id)


async def drop_expired_exports(pool: asyncpg.Pool) -> int:
    """Drop the data of expired (and canceled) export jobs."""
    dropped = 0
    for row in await pool.fetch(QUERIES["jobs_expired_data"], JOB_TYPE):
        async with pool.acquire() as conn, conn.transaction():
            await drop_snapshot(conn, row["id"])
        dropped += 1
    return dropped


async def store_job_data_length(conn: asyncpg.Connection, job_id: int, version: int, length: int) -> None:
    """Record the exact bytes of the job's download of data ``version`` (the first value stays: every
    download of one version is the same; nothing is stored for a version an erasure has replaced). In a
    savepoint: in a REPEATABLE READ download, an erasure that changed the job since its snapshot makes the
    update fail to serialise, which is that case too."""
    with contextlib.suppress(asyncpg.SerializationError):
        async with conn.transaction():
            await conn.execute(QUERIES["job_store_data_bytes"], job_id, length, version)


async def data_version(conn: asyncpg.Connection, job_id: int) -> int:
    """How many erasures shortened the job's data (gateway.privacy): part of its download's ETag."""
    return await conn.fetchval(QUERIES["job_data_version"], job_id)


def job_rows_query(job_id: int, attributes: list[str]) -> str:
    """The job's download: its snapshot's rows, one CSV column per attribute."""
    return sql("export_job_rows", job_id=job_id, columns=columns_sql(len(attributes)))


async def scan_in_order(conn: asyncpg.Connection) -> None:
    """Make this transaction read a snapshot in one fixed order: the same bytes on every download."""
    await conn.execute(QUERIES["export_job_scan_in_order"])


async def measure_job_data(conn: asyncpg.Connection, job_id: int, version: int, query: str,
                           attributes: list[str]) -> int | None:
    """The exact bytes of the job's download (its rows ``query``) of data ``version``: one COPY, as the
    download runs it, counted and stored in a transaction of its own, so the length stays known if the
    download then breaks. None if an erasure changed the data since that version was read."""
    async with conn.transaction(isolation="repeatable_read"):
        if await data_version(conn, job_id) != version:
            return None
        await scan_in_order(conn)
        length = await csv_length(conn, query, attributes)
        await store_job_data_length(conn, job_id, version, length)
    return length


async def snapshot(lease: queue.Lease) -> None:
    """Materialise the segment's audience and complete the job, in one transaction. The transaction holds
    back its own endpoint's change feed only (it writes no change time at all)."""
    job_id, segment_id = lease.id, lease.segment_id
    async with lease.pool.acquire() as conn, conn.transaction():
        await declare_writes(conn, lease.endpoint_id)
        attributes = await conn.fetchval(QUERIES["job_segment_columns"], segment_id)
        await conn.execute(sql("job_snapshot_drop", job_id=job_id))
        members = table_names(segment_id)["members"]
        if await conn.fetchval(QUERIES["job_members_exist"], members):
            status = await conn.execute(sql("job_snapshot_copy", job_id=job_id, segment_id=segment_id))
            rows = int(status.split()[-1])
        else:
            await conn.execute(sql("job_snapshot_empty", job_id=job_id))
            rows = 0
        await conn.execute(QUERIES["export_job_result"], job_id, attributes or [], rows, lease.settings.export_ttl)
        await lease.complete(conn)  # canceled or taken over meanwhile: JobLost rolls the snapshot back
    metrics.EXPORT_ROWS.inc(rows)
    log.info("job %d complete: %d rows of segment %d", job_id, rows, segment_id)


EXPORT = queue.Kind(JOB_TYPE, snapshot, discard=drop_snapshot, failure_reason=failure_reason)
