"""Export jobs (kind ``ExportSegmentData``): created by ``POST /v1/jobs``, run by the job queue
(gateway.jobs.queue), which claims, leases, takes over and cancels them as it does every kind.

What is particular to exports: the job writes the audience as it is at that moment to a csv file in
``GATEWAY_EXPORT_DIR`` (``job-<id>-<attempt>.csv``), with the code of export files
(gateway.jobs.export_files.write_file: one REPEATABLE READ snapshot, written under a temp name, fsynced and
renamed); the file is the download's exact bytes (header row, then the rows as PostgreSQL's CSV writes them),
served with sendfile. It keeps the file until ``GATEWAY_EXPORT_TTL`` runs out (a cancel removes it at once).
An erasure rewrites it without the erased rows under a new name (``job-<id>-<attempt>-e<n>.csv``: a new
version, another ETag). Jobs completed before files (migration 0018) have a table ``exports.job_<id>``
instead, downloaded as before until they expire.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import asyncpg

from gateway.db.csvcopy import columns_sql, csv_length, scan_in_order
from gateway.db.names import sql
from gateway.db.queries import QUERIES
from gateway.errors import NotFound
from gateway.ids import parse_int
from gateway.jobs import export_files, queue
from gateway.ops import metrics
from gateway.settings import Settings

log = logging.getLogger(__name__)

JOB_TYPE = export_files.SNAPSHOT_KIND
TASK = {"fields": None, "format": "csv", "expression": None}  # every attribute, as csv, every member
ERASURE_TRIES = 3  # an erasure went over the segment while the file was written: write it again


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


async def cancel_job(conn: asyncpg.Connection, settings: Settings, endpoint_id: int, job_id: int) -> bool:
    """Cancel an export job and drop its data; False if it had already ended (error or canceled)."""
    if await queue.cancel(conn, EXPORT, endpoint_id, job_id):
        export_files.remove_file(settings.export_path, await conn.fetchval(QUERIES["export_job_file"], job_id))
        return True
    await get_job(conn, endpoint_id, job_id)  # 404 if it is not this endpoint's
    return False


async def drop_snapshot(conn: asyncpg.Connection, job_id: int) -> str | None:
    """Drop the job's data; its downloads then answer 410. Returns its file's name (the caller removes the
    file, as it knows the export directory), None for a job whose data is a table or that has none."""
    await conn.execute(sql("job_snapshot_drop", job_id=job_id))
    name = await conn.fetchval(QUERIES["export_job_file"], job_id)
    await conn.execute(QUERIES["job_mark_dropped"], job_id)
    return name
async def drop_expired_exports(pool: asyncpg.Pool, settings: Settings) -> int:
    """Drop the data of expired (and canceled) export jobs."""
    dropped = 0
    for row in await pool.fetch(QUERIES["jobs_expired_data"], JOB_TYPE):
        async with pool.acquire() as conn, conn.transaction():
            export_files.remove_file(settings.export_path, await drop_snapshot(conn, row["id"]))
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


class ErasedMeanwhile(Exception):
    """An erasure went over the segment after the snapshot: roll the completion back, write it again."""


async def still_running(lease: queue.Lease, rows: int) -> None:
    """The writer's progress check: JobLost once the job was canceled or taken over (the writer stops)."""
    if await lease.pool.fetchval(QUERIES["export_job_running"], lease.id, lease.owner, lease.attempts) is None:
        raise queue.JobLost()


def file_name(job_id: int, attempt: int, version: int = 0) -> str:
    """The snapshot file of a job's attempt, and of each version an erasure rewrote."""
    return f"job-{job_id}-{attempt}{f'-e{version}' if version else ''}.csv"


async def snapshot(lease: queue.Lease) -> None:
    """Write the segment's audience to the job's file, then complete the job, recording the file. An erasure
    that went over the segment after the snapshot (the segment's ``erased_by`` moved) may have missed the
    file: it is written again, from a snapshot that follows the erasure."""
    started = time.perf_counter()
    directory = lease.settings.export_path
    for _ in range(ERASURE_TRIES):
        written = await export_files.write_file(lease, TASK, file_name(lease.id, lease.attempts),
                                                f".job-{lease.id}-{lease.attempts}.tmp", still_running,
                                                digest=False)  # nothing shows a /v1 job's hash
        try:
            async with lease.pool.acquire() as conn, conn.transaction():
                await conn.execute(QUERIES["export_job_result"], lease.id, written.attributes, written.rows,
                                   lease.settings.export_ttl, written.name, written.bytes)
                if await export_files.erased_since(conn, lease.segment_id, written.erased_by) is not None:
                    raise ErasedMeanwhile()
                await lease.complete(conn)  # canceled or taken over meanwhile: JobLost rolls it back
            break
        except ErasedMeanwhile:
            export_files.remove_file(directory, written.name)
        except BaseException:
            export_files.remove_file(directory, written.name)
            raise
    else:
        raise RuntimeError(f"erasures kept going over segment {lease.segment_id} while job {lease.id} wrote it")
    metrics.EXPORT_ROWS.inc(written.rows)
    log.info("job %d complete: %d rows of segment %d, %s, %d bytes in %.2f s", lease.id, written.rows,
             lease.segment_id, written.name, written.bytes, time.perf_counter() - started)


async def _discard(conn: asyncpg.Connection, job_id: int) -> None:
    await drop_snapshot(conn, job_id)  # its file is removed by cancel_job, after the cancel


EXPORT = queue.Kind(JOB_TYPE, snapshot, discard=_discard, failure_reason=failure_reason)
