"""/v1 export jobs write their snapshot as a csv file (gateway.jobs.exports): its download is the bytes the
table snapshots of earlier jobs served (those still download from their table), an erasure rewrites it
byte for byte without the erased rows, and the sweeps remove the files no job wants."""

from __future__ import annotations

import asyncpg

from gateway.jobs.export_files import sweep_export_files
from gateway.jobs.exports import drop_expired_exports
from tests.integration.privacy_helpers import erase, wait_erased
from tests.helpers import eventually
from tests.integration.pull_helpers import create_job, download, job_reply, sync_get, wait_for_status
from tests.integration.push_helpers import csv_body, push_ok
from tests.integration.test_export_files import MEMBERS, all_files, pool_of, pushed_segment, waiting_statement

IDENTITY = {"Accept-Encoding": "identity"}
ANN = "ann@example.com"


async def complete_job(client, segment_id: str):
    job = await create_job(client, segment_id)
    await wait_for_status(client, job, "complete")
    return job


async def data_file(db, job) -> str | None:
    return await db.fetchval("SELECT data_file FROM jobs WHERE id = $1", job.id)


async def test_the_file_is_the_bytes_a_table_snapshot_served(client, db, settings):
    """Quotes, commas, newlines, backslashes, tabs and empty values; then the same job stored as one completed
    before snapshot files (a table, no file, no length): the same bytes, the same ETag."""
    segment_id = await pushed_segment(client)
    job = await complete_job(client, segment_id)
    from_file = await download(client, job, headers=IDENTITY)
    assert from_file.status == 200 and (settings.export_path / await data_file(db, job)).is_file()
    await db.execute(f"CREATE TABLE exports.job_{job.id} AS SELECT attrs FROM audience.members_{int(segment_id)}")
    await db.execute("UPDATE jobs SET data_file = NULL, data_bytes = NULL WHERE id = $1", job.id)
    from_table = await download(client, job, headers=IDENTITY)
    assert from_table.status == 200 and "Content-Length" not in from_table.headers  # streamed by COPY
    assert (from_file.body, from_file.headers["ETag"]) == (from_table.body, from_table.headers["ETag"])
    assert from_file.body == (await sync_get(client, segment_id, IDENTITY)).body
    await db.execute("UPDATE jobs SET data_bytes = NULL WHERE id = $1", job.id)  # as a range request found it
    ranged = await download(client, job, headers={**IDENTITY, "Range": "bytes=5-"})  # measures the table's length
    assert ranged.status == 206 and ranged.body == from_file.body[5:]
    assert await db.fetchval("SELECT data_bytes FROM jobs WHERE id = $1", job.id) == len(from_file.body)


async def test_an_erasure_rewrites_the_file_without_exactly_the_erased_rows(client, db, settings):
    segment_id = await pushed_segment(client)
    job = await complete_job(client, segment_id)
    old_name = await data_file(db, job)
    before = await download(client, job, headers=IDENTITY)
    erased = [b'a@x.com,"say ""hi""",FR\n', b'c@x.com,"line\nbreak",DE\n']  # as PostgreSQL's CSV writes them
    assert all(before.body.count(row) == 1 for row in erased)

    result = await wait_erased(client, (await erase(client, ["a@x.com", "c@x.com"]))["id"])

    assert result["erasedFrom"][segment_id]["snapshots"] == 2
    after = await download(client, job, headers=IDENTITY)
    assert after.body == before.body.replace(erased[0], b"").replace(erased[1], b"")
    assert after.headers["ETag"] != before.headers["ETag"] and int(after.headers["Content-Length"]) == len(after.body)
    assert (await job_reply(client, job.id)).result["rowCount"] == len(MEMBERS) - 2
    assert all_files(settings) == [f"job-{job.id}-1-e1.csv"] != [old_name]


async def test_the_sweeps_remove_expired_and_unwanted_snapshot_files(client, db, settings, database_url):
    segment_id = await pushed_segment(client)
    kept, expired = await complete_job(client, segment_id), await complete_job(client, segment_id)
    await db.execute("UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = $1", expired.id)
    kept_name = await data_file(db, kept)
    unwanted = [f"job-{kept.id}-7.csv", f".job-{kept.id}-1.tmp", "job-999999-1-e2.csv"]
    strangers = ["job-notes.txt", ".job-1.tmp"]
    for name in unwanted + strangers:
        (settings.export_path / name).write_text("not a file any job wants")
    async with pool_of(database_url) as pool:
        assert await drop_expired_exports(pool, settings) == 1
        assert await sweep_export_files(pool, settings) == len(unwanted)
    assert all_files(settings) == sorted([kept_name, *strangers])
    (await download(client, expired)).assert_failure(410)


async def test_a_job_completing_after_an_erasure_went_over_its_segment_writes_its_file_again(
        client, db, database_url, settings):
    """The snapshot holds ann; a push removes her and an erasure of her runs before the job completes (held
    by the test's lock on the job's row): the erasure finds her nowhere, not even in the file (the job is not
    complete yet), but marks the segment because a /v1 export of it is running; the job sees that when it
    completes and writes its file again, without her."""
    segment_id = await pushed_segment(client, [[ANN, "Ann", "FR"], *MEMBERS])
    segment_lock, job_lock = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        await segment_lock.execute("BEGIN")
        await segment_lock.execute("SELECT id FROM segments WHERE id = $1 FOR NO KEY UPDATE", int(segment_id))
        job = await create_job(client, segment_id)
        await eventually(lambda: waiting_statement(db, "member_count FROM segments"), "the snapshot to wait")
        await job_lock.execute("BEGIN")
        await job_lock.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", job.id)
        await segment_lock.execute("ROLLBACK")
        await eventually(lambda: waiting_statement(db, "data_file = $5"), "the job's completion to wait")
        assert f"{ANN},Ann,FR\n" in (settings.export_path / f"job-{job.id}-1.csv").read_text()
        await push_ok(client, segment_id, csv_body(["email"], [[ANN]]), "REMOVE")
        done = await wait_erased(client, (await erase(client, [ANN]))["id"])
        assert done["found"] == {} and (await job_reply(client, job.id)).result["status"] == "running"
        await job_lock.execute("ROLLBACK")
    finally:
        await segment_lock.close()
        await job_lock.close()
    await wait_for_status(client, job, "complete")
    body = (await download(client, job, headers=IDENTITY)).body
    assert ANN.encode() not in body and body.count(b"\n") == 1 + len(MEMBERS) + 1  # header, rows, a quoted newline
    assert all_files(settings) == [f"job-{job.id}-1.csv"]
