"""Erasure jobs (kind ``PrivacyErase``): created by ``POST /api/privacy/erase``, run by the job queue
(gateway.jobs.queue) like every kind. The work is gateway.privacy.erase's; this module enqueues it with its
request, and runs it: the segments (each in a transaction of its own batch), then the export files, then the
``/v1`` export jobs' snapshot files, then the stored rejected rows and the audit in the transaction that
completes the job.

Export files are deleted, not rewritten: the search stops at the first erased identity a file holds, where a
rewrite would read, write (and for csv.gz compress) and fsync the whole file, for every file, within the
erasure's time budget; a deleted file is made again by a new export job. A file job still writing when its
segment is erased deletes its own file when it completes (gateway.jobs.export_files.erased_since): the
segment's erasure runs after the job's snapshot released the segment's row, so the job either completed
before this search reads the job list or sees the erasure when it completes."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import asyncpg

from gateway.errors import NotFound
from gateway.ids import parse_int
from gateway.db.queries import QUERIES
from gateway.jobs import export_files, exports, queue
from gateway.privacy import erase
from gateway.privacy.identities import Received, erase_form

log = logging.getLogger(__name__)


def unknown_erasure(text: str) -> NotFound:
    """Another endpoint's erasure is answered exactly like one that does not exist."""
    return NotFound(f"erasure {text} does not exist", code="erasure_not_found")


def parse_erasure_id(text: str) -> int:
    job_id = parse_int(text)
    if job_id is None:
        raise unknown_erasure(text)
    return job_id


async def create_erasure(conn: asyncpg.Connection, endpoint_id: int, key_id: int, request_id: str,
                         source: erase.IdentitySource, suppress: bool) -> tuple[int, Received]:
    """Enqueue an erasure with its identities (streamed from ``source``) in one transaction: a request that
    fails while its body streams leaves nothing. Returns the job's id and what the request sent."""
    async with conn.transaction():
        job = await queue.enqueue(conn, ERASE, endpoint_id, None)
        received = await erase.store_request(conn, job["id"], endpoint_id, key_id, request_id, source, suppress)
    return job["id"], received


async def get_erasure(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, job_id: int) -> asyncpg.Record:
    row = await erase.get_request(conn, endpoint_id, job_id)
    if row is None:
        raise unknown_erasure(str(job_id))
    return row


async def erase_files(lease: queue.Lease) -> int:
    """Delete the endpoint's export files that hold one of the identities (their jobs marked erased), after
    the segments were erased; how many. A file without an identity column (its fields left it out) cannot be
    searched: it is deleted when the erasure found the identity among its segment's members."""
    pool, directory = lease.pool, lease.settings.export_path
    candidates = await pool.fetch(QUERIES["privacy_erase_files"], lease.endpoint_id, export_files.KIND_NAME)
    if not candidates:
        return 0
    members = await erase.found_members(pool, lease.id)
    values: dict[str, set[str]] = {}
    deleted = 0
    for row in candidates:
        form = erase_form(row["identity_attribute"], row["identity_hashing"])
        if form not in values:
            values[form] = await erase.erase_values(pool, lease.id, form)
        holds = await asyncio.to_thread(export_files.file_holds, directory / row["file_name"], row["format"],
                                        row["identity_attribute"], values[form])
        if holds or (holds is None and row["segment_id"] in members):
            async with pool.acquire() as conn, conn.transaction():
                if await export_files.erase_file(conn, directory, row["id"], row["file_name"], lease.id,
                                                 row["segment_id"]):
                    deleted += 1
    return deleted


async def erase_snapshot_files(lease: queue.Lease) -> int:
    """Rewrite the snapshot files of the endpoint's /v1 export jobs that hold one of the identities without
    those rows, as a new version of the job's data (its row count drops, another ETag); the rows removed.
    A job still writing its file when its segment was erased writes it again (gateway.jobs.exports)."""
    pool, directory = lease.pool, lease.settings.export_path
    candidates = await pool.fetch(QUERIES["privacy_erase_snapshot_files"], lease.endpoint_id,
                                  export_files.SNAPSHOT_KIND)
    values: dict[str, set[str]] = {}
    removed = 0
    for row in candidates:
        form = erase_form(row["identity_attribute"], row["identity_hashing"])
        if form not in values:
            values[form] = await erase.erase_values(pool, lease.id, form)
        path = directory / row["file_name"]
        if not await asyncio.to_thread(export_files.file_holds, path, "csv", row["identity_attribute"], values[form]):
            continue
        async with pool.acquire() as conn, conn.transaction():
            version = await conn.fetchval(QUERIES["export_job_lock_version"], row["id"], row["file_name"])
            if version is None:
                continue  # canceled, expired or rewritten meanwhile
            name = exports.file_name(row["id"], int(row["file_name"].split("-")[2].split(".")[0]), version + 1)
            temp = directory / f".{name}.tmp"
            export_files.remove_file(directory, temp.name)  # left by an erasure that died rewriting it
            try:
                n = await asyncio.to_thread(export_files.rewrite_without, path, temp, row["identity_attribute"],
                                            values[form])
                await asyncio.to_thread(os.replace, temp, directory / name)
            except BaseException:
                export_files.remove_file(directory, temp.name)
                raise
            await conn.fetchval(QUERIES["export_job_file_erased"], row["id"], name, n,
                                (directory / name).stat().st_size, row["file_name"])
            await conn.execute(QUERIES["privacy_record_snapshots"], lease.id, str(row["segment_id"]), n)
        export_files.remove_file(directory, row["file_name"])
        removed += n
    return removed


async def run(lease: queue.Lease) -> None:
    started = time.perf_counter()
    await erase.prepare(lease.pool)
    await erase.erase_segments(lease.pool, lease.id, lease.endpoint_id)
    files = await erase_files(lease)
    await erase_snapshot_files(lease)
    async with lease.pool.acquire() as conn, conn.transaction():
        rejects = await erase.erase_rejects(conn, lease.id, lease.endpoint_id)
        await erase.finish(conn, lease.id, rejects)
        await lease.complete(conn)
    log.info("erasure %d of endpoint %d complete in %.3f s (%d export files deleted)", lease.id,
             lease.endpoint_id, time.perf_counter() - started, files)


ERASE = queue.Kind(erase.JOB_KIND, run)
