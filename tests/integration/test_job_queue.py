"""The job queue is generic: a kind of job registered here only (``Tick``, nothing to do with exports) is
claimed, leased, taken over once its lease runs out, and canceled by the same code (gateway.jobs.queue)
that runs the export jobs; and /v1/jobs, which asks for export jobs, does not see it."""

import asyncio
import dataclasses

import asyncpg
import pytest

from gateway.db.queries import QUERIES
from gateway.errors import NotFound
from gateway.jobs import exports, queue
from gateway.jobs.queue import JobWorkers
from tests.helpers import eventually


class Tick:
    """A tiny kind of job: each run records itself, waits for ``finish``, then stores its attempt number as
    the job's ``row_count`` and completes, in one transaction."""

    def __init__(self) -> None:
        self.runs: list[queue.Lease] = []
        self.started = asyncio.Condition()
        self.stopped: list[int] = []
        self.discarded: list[int] = []
        self.finish = asyncio.Event()
        self.kind = queue.Kind("Tick", self.run, discard=self.discard)

    async def run(self, lease: queue.Lease) -> None:
        async with self.started:
            self.runs.append(lease)
            self.started.notify_all()
        try:
            await self.finish.wait()
        except asyncio.CancelledError:
            self.stopped.append(lease.attempts)
            raise
        async with lease.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE jobs SET row_count = $2 WHERE id = $1", lease.id, lease.attempts)
            await lease.complete(conn)

    async def discard(self, conn: asyncpg.Connection, job_id: int) -> None:
        self.discarded.append(job_id)

    async def wait_for_runs(self, count: int) -> queue.Lease:
        async with self.started:
            await asyncio.wait_for(self.started.wait_for(lambda: len(self.runs) >= count), 10)
        return self.runs[count - 1]


@pytest.fixture
def tick() -> Tick:
    return Tick()


@pytest.fixture
async def workers(database_url, settings, tick):
    """``make()`` starts a set of one worker for the Tick kind only, with a 1 s lease, on a pool of its own."""
    started: list[tuple[JobWorkers, asyncpg.Pool]] = []

    async def make() -> JobWorkers:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        worker = JobWorkers(pool, database_url, dataclasses.replace(settings, export_workers=1, job_lease=1.0),
                            kinds=[tick.kind], poll_seconds=0.2)
        await worker.start()
        started.append((worker, pool))
        return worker

    yield make
    for worker, pool in started:
        await worker.stop()
        await pool.close()


async def die(worker: JobWorkers) -> None:
    """The worker's process dies: its tasks end without ``stop()``, which would hand its job back."""
    for task in worker._tasks:
        task.cancel()
    await asyncio.gather(*worker._tasks, return_exceptions=True)
    worker._tasks = []


async def job(db, job_id: int) -> asyncpg.Record:
    return await db.fetchrow("SELECT kind, status, lease_owner, lease_expires_at, attempts, row_count "
                             "FROM jobs WHERE id = $1", job_id)


async def test_a_second_kind_is_claimed_leased_taken_over_and_completed(db, tick, workers):
    endpoint = await db.fetchval("SELECT id FROM endpoints WHERE name = 'default'")
    first = await workers()
    job_id = (await queue.enqueue(db, tick.kind, endpoint, None))["id"]

    lease = await tick.wait_for_runs(1)
    assert (lease.id, lease.kind, lease.owner, lease.attempts) == (job_id, "Tick", first.owner, 1)
    claimed = await job(db, job_id)
    assert (claimed["status"], claimed["lease_owner"]) == ("running", first.owner)

    async def renewed() -> bool:  # the heartbeat pushes the lease on while the work runs
        return (await job(db, job_id))["lease_expires_at"] > claimed["lease_expires_at"]

    await eventually(renewed, "the first worker to renew its lease")

    await die(first)
    assert tick.stopped == [1]
    left = await job(db, job_id)
    assert (left["status"], left["lease_owner"]) == ("running", first.owner)  # nobody handed it back

    second = await workers()
    taken = await tick.wait_for_runs(2)
    assert (taken.id, taken.owner, taken.attempts) == (job_id, second.owner, 2)
    assert await db.fetchval("SELECT now()") >= left["lease_expires_at"]  # only once the lease ran out

    tick.finish.set()

    async def completed() -> asyncpg.Record | None:
        row = await job(db, job_id)
        return row if row["status"] == "complete" else None

    done = await eventually(completed, "the second worker to complete the job")
    assert (done["kind"], done["lease_owner"], done["row_count"]) == ("Tick", None, 2)
    assert len(tick.runs) == 2


async def test_a_second_kind_is_canceled_by_the_queue_and_unseen_by_v1_jobs(db, tick, workers):
    endpoint = await db.fetchval("SELECT id FROM endpoints WHERE name = 'default'")
    await workers()
    job_id = (await queue.enqueue(db, tick.kind, endpoint, None))["id"]
    await tick.wait_for_runs(1)

    with pytest.raises(NotFound):  # GET /v1/jobs/{id} answers 404
        await exports.get_job(db, endpoint, job_id)
    assert await queue.cancel(db, exports.EXPORT, endpoint, job_id) is False  # DELETE /v1/jobs/{id} cannot
    assert (await job(db, job_id))["status"] == "running"

    assert await queue.cancel(db, tick.kind, endpoint, job_id) is True
    assert tick.discarded == [job_id]

    async def stopped() -> bool:  # the worker's next heartbeat finds the job gone and stops its work
        return tick.stopped == [1]

    await eventually(stopped, "the worker to stop the canceled job")
    row = await job(db, job_id)
    assert (row["status"], row["lease_owner"], row["row_count"]) == ("canceled", None, None)
    assert await queue.cancel(db, tick.kind, endpoint, job_id) is False  # already canceled
    assert tick.discarded == [job_id]


async def test_workers_claim_only_the_kinds_they_run(db, tick, workers):
    """A process that does not know a kind leaves its jobs to the processes that do."""
    endpoint = await db.fetchval("SELECT id FROM endpoints WHERE name = 'default'")
    job_id = (await queue.enqueue(db, tick.kind, endpoint, None))["id"]
    claim = await db.fetchrow(QUERIES["job_claim"], "an export-only worker", 1.0, queue.MAX_ATTEMPTS,
                              [exports.JOB_TYPE])
    assert claim is None and (await job(db, job_id))["status"] == "waiting"
    await workers()
    assert (await tick.wait_for_runs(1)).id == job_id
