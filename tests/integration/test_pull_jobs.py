"""Export jobs through their life: waiting → running → complete (409 for the data until then), taken over
when their worker dies, and shared by several gateway processes on one database, each job run once."""

from gateway.app import create_app
from gateway.jobs.queue import NOTIFY_CHANNEL
from tests.integration.pull_helpers import (HEADER, BusyWorker, by_identity, create_job, download, eventually,
                                            job_row, job_status, members_table, people, segment_with, table_lock,
                                            wait_for_status)
from tests.integration.push_helpers import app_client

MEMBERS = people(3)


async def serial_app(aiohttp_client, settings, **changes):
    """An app with one export worker, so that ``BusyWorker`` can hold jobs in ``waiting``."""
    return await app_client(aiohttp_client, settings, export_workers=1, **changes)


async def assert_exports_members(client, job) -> None:
    header, rows = (await download(client, job)).table()
    assert (header, by_identity(rows)) == (HEADER, by_identity(MEMBERS))


async def test_status_goes_waiting_running_complete_and_data_is_409_until_complete(aiohttp_client, settings,
                                                                                  database_url):
    client = await serial_app(aiohttp_client, settings)
    segment_id = await segment_with(client, MEMBERS)
    seen = []
    async with BusyWorker(client, database_url) as worker:
        job = await create_job(client, segment_id)
        async with table_lock(database_url, members_table(segment_id)):
            for _ in range(3):  # it stays waiting while no worker is free
                seen.append(await job_status(client, job))
            (await download(client, job)).assert_failure(409, "job_not_complete")
            await worker.release()
            await wait_for_status(client, job, "running")  # its snapshot waits for our lock
            seen.append(await job_status(client, job))
            (await download(client, job)).assert_failure(409, "job_not_complete")
        await wait_for_status(client, job, "complete")
    seen.append(await job_status(client, job))
    assert seen == ["waiting"] * 3 + ["running", "complete"]
    await assert_exports_members(client, job)


async def test_a_job_whose_worker_died_is_taken_over_once_its_lease_runs_out(aiohttp_client, settings, db,
                                                                              database_url):
    client = await serial_app(aiohttp_client, settings, job_lease=1.0)
    segment_id = await segment_with(client, MEMBERS)
    async with BusyWorker(client, database_url):
        job = await create_job(client, segment_id)
        # A worker claimed it, then died: running, its lease (still live for a moment) never renewed.
        died = await db.fetchrow(
            "UPDATE jobs SET status = 'running', lease_owner = 'dead-worker', attempts = attempts + 1, "
            "started_at = now(), lease_expires_at = now() + interval '1.5 seconds' "
            "WHERE id = $1 AND status = 'waiting' RETURNING attempts, lease_expires_at", job.id)
    assert died["attempts"] == 1  # and the live worker is free now

    async def lease_ran_out() -> bool:
        row = await db.fetchrow("SELECT status, lease_owner, now() < $2 AS live FROM jobs WHERE id = $1",
                                job.id, died["lease_expires_at"])
        if row["live"]:  # nobody takes a job whose lease is live
            assert (row["status"], row["lease_owner"]) == ("running", "dead-worker")
        return not row["live"]

    await eventually(lease_ran_out, "the dead worker's lease to run out")
    await db.execute("SELECT pg_notify($1, 'wake up')", NOTIFY_CHANNEL)  # spares waiting for the next poll
    await wait_for_status(client, job, "complete")
    assert (await job_row(db, job))["attempts"] >= died["attempts"] + 1
    await assert_exports_members(client, job)


async def test_two_gateway_processes_run_each_job_once(aiohttp_client, settings, db):
    clients = [await aiohttp_client(create_app(settings)) for _ in range(2)]
    segment_id = await segment_with(clients[0], MEMBERS)
    jobs = [await create_job(clients[number % 2], segment_id) for number in range(20)]
    for number, job in enumerate(jobs):
        other = clients[(number + 1) % 2]  # any process answers for any job
        await wait_for_status(other, job, "complete")
        await assert_exports_members(other, job)
    attempts = await db.fetch("SELECT id, attempts FROM jobs WHERE id = any($1::bigint[]) ORDER BY id",
                              [job.id for job in jobs])
    assert [(row["id"], row["attempts"]) for row in attempts] == [(job.id, 1) for job in jobs]
