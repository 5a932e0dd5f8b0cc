"""Export jobs: created by ``POST /v1/jobs``, run by workers in every ``serve`` process.

A worker claims the oldest waiting job (or one whose lease ran out: its worker died) with
``FOR UPDATE SKIP LOCKED``, renews its lease while it works, and materialises the audience as it is
at that moment into ``exports.job_<id>`` with one ``CREATE TABLE … AS`` (a consistent snapshot: later
pushes do not show). Completion is recorded only if the worker still holds the job, in the same
transaction as the snapshot, so a canceled or taken-over job leaves nothing behind. Workers wake on
``NOTIFY audience_gateway_jobs`` and poll as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

import asyncpg

from gateway.ids import parse_int
from gateway.ops import metrics
from gateway.audience.changefeed import declare_writes
from gateway.db.listen import Listener
from gateway.db.pool import CONNECTION_ERRORS
from gateway.errors import NotFound
from gateway.db.csvcopy import columns_sql, csv_length
from gateway.db.names import sql, table_names
from gateway.db.queries import QUERIES

log = logging.getLogger(__name__)

JOB_TYPE = "ExportSegmentData"
NOTIFY_CHANNEL = "audience_gateway_jobs"
LISTENER_NAME = "audience-gateway job notifications"
MAX_ATTEMPTS = 5  # a job whose worker died this often (it may be what kills it) ends in error


def failure_reason(exc: BaseException) -> str:
    """The job's ``reason`` for an unexpected failure: plain words for Exchange and the people reading
    ``jobs.reason``; the driver's message, the SQL and the traceback go to the log only."""
    if isinstance(exc, asyncpg.PostgresError):
        return "export failed: the database could not copy the segment's audience; the gateway's log has the details"
    return "export failed: internal error; the gateway's log has the details"


class JobLost(Exception):
    """This worker no longer holds the job (canceled, or its lease was taken over)."""


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
    row = await conn.fetchrow(QUERIES["job_insert"], endpoint_id, segment_id, JOB_TYPE)
    return {"jobId": row["id"], "jobDataId": row["data_id"]}


async def get_job(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, job_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["job_get"], job_id, endpoint_id)
    if row is None:
        raise unknown_job(str(job_id))
    return row


async def cancel_job(conn: asyncpg.Connection, endpoint_id: int, job_id: int) -> bool:
    """Cancel a job and drop its data; False if it had already ended (error or canceled)."""
    async with conn.transaction():
        if await conn.fetchval(QUERIES["job_cancel"], job_id, endpoint_id) is None:
            await get_job(conn, endpoint_id, job_id)  # 404 if it is not this endpoint's
            return False
        await conn.execute(sql("job_snapshot_drop", job_id=job_id))
        await conn.execute(QUERIES["job_mark_dropped"], job_id)
    return True


async def drop_expired_exports(pool: asyncpg.Pool) -> int:
    """Drop the data of expired (and canceled) jobs; their downloads then answer 410. Also end the jobs
    whose workers died ``MAX_ATTEMPTS`` times."""
    await pool.execute(QUERIES["jobs_give_up"], MAX_ATTEMPTS)
    dropped = 0
    for row in await pool.fetch(QUERIES["jobs_expired_data"]):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(sql("job_snapshot_drop", job_id=row["id"]))
            await conn.execute(QUERIES["job_mark_dropped"], row["id"])
        dropped += 1
    return dropped


async def store_job_data_length(conn: asyncpg.Connection, job_id: int, length: int) -> None:
    """Record the exact bytes of the job's download (the first value stays: every download is the same)."""
    await conn.execute(QUERIES["job_store_data_bytes"], job_id, length)


def job_rows_query(job_id: int, attributes: list[str]) -> str:
    """The job's download: its snapshot's rows, one CSV column per attribute."""
    return sql("export_job_rows", job_id=job_id, columns=columns_sql(len(attributes)))


async def scan_in_order(conn: asyncpg.Connection) -> None:
    """Make this transaction read a snapshot in one fixed order: the same bytes on every download."""
    await conn.execute(QUERIES["export_job_scan_in_order"])


async def measure_job_data(conn: asyncpg.Connection, job_id: int, query: str, attributes: list[str]) -> int:
    """The exact bytes of the job's download (its rows ``query``): one COPY, as the download runs it,
    counted and stored in a transaction of its own, so the length stays known if the download then breaks."""
    async with conn.transaction():
        await scan_in_order(conn)
        length = await csv_length(conn, query, attributes)
        await store_job_data_length(conn, job_id, length)
    return length


class ExportWorkers:
    """``count`` workers in this process, each running one job at a time."""

    def __init__(self, pool: asyncpg.Pool, listen_url: str, *, count: int, lease_seconds: float,
                 export_ttl: float, poll_seconds: float = 5.0) -> None:
        self.pool = pool
        self.listen_url = listen_url
        self.count = count
        self.lease_seconds = lease_seconds
        self.export_ttl = export_ttl
        self.poll_seconds = poll_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        # NOTIFY wakes a worker at once; polling finds every job anyway. On (re)connection, look for work
        # that was announced while nothing listened.
        self._listener = Listener(listen_url, NOTIFY_CHANNEL, LISTENER_NAME, lambda _payload: self._wake.set(),
                                  on_connect=self._wake.set)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"export-worker-{i}") for i in range(self.count)]
        self._tasks.append(asyncio.create_task(self._listener.run(), name="export-listener"))

    async def stop(self) -> None:
        """Stop working and hand running jobs back, so another process can take them at once."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self.pool.execute(QUERIES["jobs_release"], self.owner)

    async def _work(self) -> None:
        while True:
            try:
                job = await self.pool.fetchrow(QUERIES["job_claim"], self.owner, self.lease_seconds, MAX_ATTEMPTS)
            except CONNECTION_ERRORS as exc:
                log.warning("cannot claim jobs: %s", exc)
                job = None
            if job is None:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                continue
            await self._run(job["id"], job["segment_id"], job["endpoint_id"])

    async def _run(self, job_id: int, segment_id: int, endpoint_id: int) -> None:
        """Snapshot the segment while a heartbeat keeps the lease; stop if the job is canceled."""
        snapshot = asyncio.create_task(self._snapshot(job_id, segment_id, endpoint_id))
        started, outcome = time.perf_counter(), "interrupted"
        try:
            while not snapshot.done():
                await asyncio.wait([snapshot], timeout=self.lease_seconds / 3)
                if not snapshot.done() and await self.pool.fetchval(
                        QUERIES["job_heartbeat"], job_id, self.owner, self.lease_seconds) is None:
                    raise JobLost()
            metrics.EXPORT_ROWS.inc(await snapshot)
            outcome = "complete"
        except JobLost:
            outcome = "lost"
            log.info("job %d was canceled or taken over: stopped", job_id)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the process is stopping; stop() hands the job back
        except CONNECTION_ERRORS as exc:
            log.warning("job %d interrupted (%s): it is taken again when its lease runs out", job_id, exc)
        except Exception as exc:
            outcome = "error"
            reason = failure_reason(exc)
            log.exception("job %d failed (its reason says: %s)", job_id, reason)
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.pool.execute(QUERIES["job_fail"], job_id, self.owner, reason)
        finally:
            metrics.JOB_DURATION.labels(outcome).observe(time.perf_counter() - started)
            if not snapshot.done():
                snapshot.cancel()  # asyncpg cancels the statement on the server
                with contextlib.suppress(BaseException):
                    await snapshot

    async def _snapshot(self, job_id: int, segment_id: int, endpoint_id: int) -> int:
        """Returns the rows exported. The snapshot's transaction holds back its own endpoint's change feed
        only (it writes no change time at all)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await declare_writes(conn, endpoint_id)
            attributes = await conn.fetchval(QUERIES["job_segment_columns"], segment_id)
            await conn.execute(sql("job_snapshot_drop", job_id=job_id))
            members = table_names(segment_id)["members"]
            if await conn.fetchval(QUERIES["job_members_exist"], members):
                status = await conn.execute(sql("job_snapshot_copy", job_id=job_id, segment_id=segment_id))
                rows = int(status.split()[-1])
            else:
                await conn.execute(sql("job_snapshot_empty", job_id=job_id))
                rows = 0
            done = await conn.fetchval(QUERIES["job_complete"], job_id, self.owner, attributes or [], rows,
                                       self.export_ttl)
            if done is None:
                raise JobLost()  # canceled or taken over meanwhile: roll the snapshot back
        log.info("job %d complete: %d rows of segment %d", job_id, rows, segment_id)
        return rows
