"""``DELETE /v1/jobs/{id}``: a canceled job never runs, a running one leaves nothing behind, a complete one's
data is dropped (its download then answers 410)."""

from tests.integration.pull_helpers import (BusyWorker, cancel, create_job, download, export_table, export_via_job,
                                            job_row, job_status, people, running_job, segment_with, wait_for_status)
from tests.integration.push_helpers import app_client


async def one_worker_app_and_segment(aiohttp_client, settings):
    """An app with one export worker (jobs run one at a time, oldest first) and a segment of 3 members."""
    client = await app_client(aiohttp_client, settings, export_workers=1)
    return client, await segment_with(client, people(3))


async def assert_worker_moved_on(client, segment_id: str) -> None:
    """A job created now completes: the one worker is done with whatever it had before."""
    later = await create_job(client, segment_id)
    await wait_for_status(client, later, "complete")


async def test_canceling_a_waiting_job_means_it_never_runs(aiohttp_client, settings, db, database_url):
    client, segment_id = await one_worker_app_and_segment(aiohttp_client, settings)
    async with BusyWorker(client, database_url):
        job = await create_job(client, segment_id)
        assert await job_status(client, job) == "waiting"
        assert await cancel(client, job) == "canceled"
    await assert_worker_moved_on(client, segment_id)
    assert await job_status(client, job) == "canceled"
    row = await job_row(db, job)
    assert (row["status"], row["attempts"], row["started_at"], row["has_table"]) == ("canceled", 0, None, False)


async def test_canceling_a_running_job_leaves_no_export_behind(aiohttp_client, settings, db, database_url):
    client, segment_id = await one_worker_app_and_segment(aiohttp_client, settings)
    async with running_job(client, database_url, segment_id) as job:  # its snapshot waits for our lock
        assert await cancel(client, job) == "canceled"
        assert await job_status(client, job) == "canceled"
    await assert_worker_moved_on(client, segment_id)  # the snapshot went on after our lock, then stopped
    assert await job_status(client, job) == "canceled"
    row = await job_row(db, job)
    assert (row["status"], row["has_table"]) == ("canceled", False), export_table(job.id)
    assert not list(settings.export_path.glob(f"*job-{job.id}-*"))  # neither its file nor its temp file


async def test_canceling_a_complete_job_drops_its_data(client, db, settings):
    job, _, rows = await export_via_job(client, await segment_with(client, people(3)))
    path = settings.export_path / (await job_row(db, job))["data_file"]
    assert len(rows) == 3 and path.is_file()
    assert await cancel(client, job) == "canceled"
    row = await job_row(db, job)
    assert (row["status"], row["has_table"], path.exists()) == ("canceled", False, False)
    assert row["data_dropped_at"] is not None
    (await download(client, job)).assert_failure(410)
