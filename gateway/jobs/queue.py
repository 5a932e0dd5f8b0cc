"""The job queue: every kind of background work is a row of ``jobs`` with a ``kind``, run by workers in
every ``serve`` process.

A worker claims the oldest waiting job of a kind it runs (or one whose lease ran out: its worker died)
with ``FOR UPDATE SKIP LOCKED``, renews its lease while the kind's code works, and stops that code if the
job is canceled or taken over meanwhile. The kind's code records completion with ``Lease.complete`` in
the transaction that writes its result, so a canceled or taken-over job leaves nothing behind. Workers
wake on ``NOTIFY audience_gateway_jobs`` (sent by ``enqueue``) and poll as a fallback. A job whose
worker died ``MAX_ATTEMPTS`` times (it may be what kills it) ends in error (``give_up_abandoned``).

The kinds of work live beside this module (``gateway.jobs.exports``: the export snapshot;
``gateway.jobs.erasure``: an erasure; ``gateway.jobs.segment_jobs``: a segment job); what a kind
adds is a ``Kind``: its name, the code that runs a claimed job, and what a cancel drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from gateway.db.listen import Listener
from gateway.db.pool import CONNECTION_ERRORS
from gateway.db.queries import QUERIES
from gateway.ops import metrics
from gateway.settings import Settings

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "audience_gateway_jobs"
LISTENER_NAME = "audience-gateway job notifications"  # shows in pg_stat_activity
MAX_ATTEMPTS = 5  # a job whose worker died this often (it may be what kills it) ends in error


class JobLost(Exception):
    """This worker no longer holds the job (canceled, or its lease was taken over)."""


def internal_failure(exc: BaseException) -> str:
    """The ``reason`` of a job whose code failed unexpectedly; the details go to the log only."""
    return "job failed: internal error; the gateway's log has the details"


@dataclasses.dataclass(frozen=True)
class Lease:
    """A claimed job, held by this worker while its lease is renewed."""
    id: int
    kind: str
    endpoint_id: int
    segment_id: int | None
    attempts: int
    owner: str
    pool: asyncpg.Pool
    settings: Settings

    async def complete(self, conn: asyncpg.Connection) -> None:
        """Mark the job complete, in the caller's transaction; JobLost (roll back) if it is no longer held."""
        if await conn.fetchval(QUERIES["job_complete"], self.id, self.owner) is None:
            raise JobLost()

    async def fail(self, conn: asyncpg.Connection, reason: str) -> None:
        """End the job in error with ``reason``, in the caller's transaction (a kind that records why its
        work could not be done beside the failure); JobLost (roll back) if it is no longer held."""
        if await conn.fetchval(QUERIES["job_fail"], self.id, self.owner, reason) is None:
            raise JobLost()


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of job. ``run`` does the work of a claimed job and ends with ``lease.complete`` in the
    transaction of its result; ``discard`` drops what a completed job left (in the cancel's transaction);
    ``failure_reason`` words an unexpected failure for the job's ``reason``."""
    name: str
    run: Callable[[Lease], Awaitable[None]]
    discard: Callable[[asyncpg.Connection, int], Awaitable[None]] | None = None
    failure_reason: Callable[[BaseException], str] = internal_failure


async def enqueue(conn: asyncpg.Connection, kind: Kind, endpoint_id: int,
                  segment_id: int | None) -> asyncpg.Record:
    """A new waiting job (its ``id`` and ``data_id``); the workers of every process are woken."""
    return await conn.fetchrow(QUERIES["job_insert"], kind.name, endpoint_id, segment_id)


async def get(conn: asyncpg.Connection | asyncpg.Pool, kind: Kind, endpoint_id: int,
              job_id: int) -> asyncpg.Record | None:
    """The endpoint's job of this kind; None if there is none (or its segment was deleted)."""
    return await conn.fetchrow(QUERIES["job_get"], job_id, endpoint_id, kind.name)


async def cancel(conn: asyncpg.Connection, kind: Kind, endpoint_id: int, job_id: int) -> bool:
    """Cancel the endpoint's job of this kind (a worker running it stops at its next heartbeat) and discard
    what it left; False if there is no such job or it had already ended in error or been canceled."""
    async with conn.transaction():
        if await conn.fetchval(QUERIES["job_cancel"], job_id, endpoint_id, kind.name) is None:
            return False
        if kind.discard is not None:
            await kind.discard(conn, job_id)
    return True


async def give_up_abandoned(pool: asyncpg.Pool) -> None:
    """End in error the running jobs whose workers died ``MAX_ATTEMPTS`` times."""
    await pool.execute(QUERIES["jobs_give_up"], MAX_ATTEMPTS)


class JobWorkers:
    """``count`` workers in this process, each running one job at a time, of the ``kinds`` given."""

    def __init__(self, pool: asyncpg.Pool, listen_url: str, settings: Settings, kinds: Sequence[Kind], *,
                 poll_seconds: float = 5.0) -> None:
        self.pool = pool
        self.settings = settings
        self.kinds = {kind.name: kind for kind in kinds}
        self.count = settings.export_workers
        self.lease_seconds = settings.job_lease
        self.poll_seconds = poll_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        # NOTIFY wakes a worker at once; polling finds every job anyway. On (re)connection, look for work
        # that was announced while nothing listened.
        self._listener = Listener(listen_url, NOTIFY_CHANNEL, LISTENER_NAME, lambda _payload: self._wake.set(),
                                  on_connect=self._wake.set)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"job-worker-{i}") for i in range(self.count)]
        self._tasks.append(asyncio.create_task(self._listener.run(), name="job-listener"))

    async def stop(self) -> None:
        """Stop working and hand running jobs back, so another process can take them at once."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self.pool.execute(QUERIES["jobs_release"], self.owner)

    async def _work(self) -> None:
        while True:
            self._wake.clear()  # before the claim: a NOTIFY that arrives while it runs is not lost
            try:
                job = await self.pool.fetchrow(QUERIES["job_claim"], self.owner, self.lease_seconds, MAX_ATTEMPTS,
                                               list(self.kinds))
            except CONNECTION_ERRORS as exc:
                log.warning("cannot claim jobs: %s", exc)
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):  # not wait_for: see gateway.db.listen
                    async with asyncio.timeout(self.poll_seconds):
                        await self._wake.wait()
                continue
            await self._run(self._lease(job))

    def _lease(self, job: Any) -> Lease:
        return Lease(id=job["id"], kind=job["kind"], endpoint_id=job["endpoint_id"], segment_id=job["segment_id"],
                     attempts=job["attempts"], owner=self.owner, pool=self.pool, settings=self.settings)

    async def _run(self, lease: Lease) -> None:
        """Run the kind's code while a heartbeat keeps the lease; stop it if the job is canceled or taken over."""
        kind = self.kinds[lease.kind]
        work = asyncio.create_task(kind.run(lease))
        started, outcome = time.perf_counter(), "interrupted"
        try:
            while not work.done():
                await asyncio.wait([work], timeout=self.lease_seconds / 3)
                if not work.done() and await self.pool.fetchval(
                        QUERIES["job_heartbeat"], lease.id, self.owner, self.lease_seconds) is None:
                    raise JobLost()
            await work
            outcome = "complete"
        except JobLost:
            outcome = "lost"
            log.info("job %d was canceled or taken over: stopped (a %s job)", lease.id, lease.kind)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the process is stopping; stop() hands the job back
        except CONNECTION_ERRORS as exc:
            log.warning("job %d interrupted (%s): it is taken again when its lease runs out", lease.id, exc)
        except Exception as exc:
            outcome = "error"
            reason = kind.failure_reason(exc)
            log.exception("job %d failed (a %s job; its reason says: %s)", lease.id, lease.kind, reason)
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.pool.execute(QUERIES["job_fail"], lease.id, self.owner, reason)
        finally:
            metrics.JOB_DURATION.labels(outcome).observe(time.perf_counter() - started)
            if not work.done():
                work.cancel()  # asyncpg cancels the statement on the server
                with contextlib.suppress(BaseException):
                    await work
