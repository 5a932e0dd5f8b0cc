"""Erasure reaches export files (``/api/export/jobs``): a file holding an erased identity is deleted and its
job says so (``erased``, download 410), the erasure counts it; a file job still writing when the erasure
goes over its segment deletes its own file when it completes. An erased export snapshot (``/v1/jobs``) gets
a new ETag and length. Proven through the public routes."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
from collections.abc import AsyncIterator

import asyncpg

from tests.conftest import AUTH
from tests.helpers import eventually
from tests.integration.manage_helpers import api
from tests.integration.privacy_helpers import erase, erasure, wait_erased
from tests.integration.pull_helpers import create_job, download, people, segment_with, wait_for_status
from tests.integration.push_helpers import csv_body, push_ok
from tests.integration.test_export_files import (MEMBERS, all_files, create_export, exported, finished,
                                                 held_mid_write, job, pushed_segment, visible_files,
                                                 waiting_statement)

ANN = "ann@example.com"
HEADER = ["email", "Name", "Country"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def identities_in(file_format: str, body: bytes) -> set[str]:
    """The first column (csv) or the ``email`` value (ndjson) of every row of a downloaded file."""
    text = (gzip.decompress(body) if file_format == "csv.gz" else body).decode()
    if file_format == "ndjson":
        return {json.loads(line)["email"] for line in text.splitlines()}
    return {line.split(",")[0] for line in text.splitlines()[1:]}


async def assert_erased(client, result: dict, erasure_id: int) -> None:
    """The job stays SUCCEEDED, says which erasure deleted its file, has no file, and its download is 410."""
    now = await job(client, result["id"])
    assert now["status"] == "SUCCEEDED" and now["file"] is None, now
    assert now["erased"]["erasureId"] == erasure_id, now
    (await api(client, "GET", result["file"]["url"])).assert_failure(410, "export_erased")


async def test_erase_deletes_every_export_file_holding_the_identity_and_keeps_the_others(client, settings):
    holding = await pushed_segment(client, [[" Ann@Example.COM ", "Ann", "FR"], *MEMBERS])
    files = {}
    for file_format in ("csv", "csv.gz", "ndjson"):
        result, body = await exported(client, holding, format=file_format)
        assert ANN in identities_in(file_format, body)
        files[file_format] = result
    # fields without the identity column: it cannot be searched, and the identity was a member
    files["no identity"], _ = await exported(client, holding, fields="Name,Country")
    # the identity was removed by a push after this file was written: only the file still holds it
    removed = await pushed_segment(client, [[ANN, "Ann", "FR"], ["bob@x.com", "Bob", "DE"]])
    files["removed"], _ = await exported(client, removed, format="ndjson")
    await push_ok(client, removed, csv_body(["email"], [[ANN]]), "REMOVE")
    # a hashing segment's file holds the hash
    response = await client.post("/v1/segments", json={"name": "hashed", "identityHashing": "sha256"}, headers=AUTH)
    hashed = (await response.json())["result"]["segmentId"]
    await push_ok(client, hashed, csv_body(["email"], [[ANN], ["carl@x.com"]]))
    files["hashed"], _ = await exported(client, hashed)
    # files without the identity: kept, byte for byte
    kept_pairs = [await exported(client, holding, filter={"segments": [{"segmentId": holding}],
                                                          "expression": 'Country = "CA"'}),
                  await exported(client, await pushed_segment(client), format="csv.gz")]

    result = await wait_erased(client, (await erase(client, [ANN]))["id"])

    assert result["filesErased"] == 6
    assert result["erasedFrom"][holding] == {"members": 1, "staged": 0, "snapshots": 0, "files": 4}
    assert result["erasedFrom"][removed] == {"members": 0, "staged": 0, "snapshots": 0, "files": 1}
    assert result["erasedFrom"][hashed]["files"] == 1
    assert result["found"] == {holding: 1, hashed: 1} and result["totalErased"] == 2
    for erased in files.values():
        await assert_erased(client, erased, result["id"])
    assert visible_files(settings) == sorted(kept["file"]["name"] for kept, _ in kept_pairs)
    for kept, body in kept_pairs:
        now = await job(client, kept["id"])
        assert now["erased"] is None and now["file"] is not None
        response = await client.get(kept["file"]["url"], headers=AUTH)
        assert (response.status, await response.read()) == (200, body)


async def test_a_file_job_completing_after_the_erasure_read_the_job_list_deletes_its_file(
        client, settings, db, database_url):
    """The export's snapshot share-locks the segment's row: the erasure of that segment waits for it. The
    writer is held (first at its first progress report, then at its completion): the erasure goes on once
    the snapshot ended, searches the files while the job is still PROCESSING (finding none) and completes.
    The job then completes, sees the erasure that went over its segment after its snapshot, and deletes its
    file (which holds the identity)."""
    segment_id = await pushed_segment(client, [[ANN, "Ann", "FR"], *MEMBERS])
    after = await asyncpg.connect(database_url)
    try:
        async with held_mid_write(db, database_url, segment_id, lambda: create_export(client, segment_id)) as job_id:
            erasure_id = (await erase(client, [ANN]))["id"]
            await eventually(lambda: waiting_statement(db, "privacy_erase_segment"),
                             "the erasure to wait for the export's snapshot")
            await after.execute("BEGIN")
            queued = asyncio.create_task(after.fetchval(
                "SELECT job_id FROM export_files WHERE job_id = $1 FOR UPDATE", int(job_id)))
            await eventually(lambda: waiting_statement(db, "SELECT job_id FROM export_files"),
                             "the test's second lock to queue behind the progress report")
        await queued
        await eventually(lambda: waiting_statement(db, "file_name = $3"), "the job's completion to wait")
        done = await wait_erased(client, erasure_id)
        assert done["filesErased"] == 0 and done["found"] == {segment_id: 1}
        assert (await job(client, job_id))["status"] == "PROCESSING"
        assert all_files(settings) == [f"export-{job_id}-1.csv"]  # written, with the identity, not recorded
        await after.execute("ROLLBACK")
        result = await finished(client, job_id)
    finally:
        await after.close()
    assert result["status"] == "SUCCEEDED" and result["file"] is None, result
    assert result["erased"]["erasureId"] == erasure_id
    (await api(client, "GET", f"/api/export/jobs/{job_id}/file")).assert_failure(410, "export_erased")
    assert all_files(settings) == []
    done = await erasure(client, erasure_id)
    assert done["filesErased"] == 1 and done["erasedFrom"][segment_id]["files"] == 1


@contextlib.asynccontextmanager
async def held_at_completion(client, db, database_url: str, segment_id: str) -> AsyncIterator[str]:
    """An export job of the segment whose snapshot ended (its file written and renamed) and whose completion
    waits for the test's lock on its export_files row, freed on leaving; yields its id."""
    after = await asyncpg.connect(database_url)
    try:
        async with held_mid_write(db, database_url, segment_id, lambda: create_export(client, segment_id)) as job_id:
            await after.execute("BEGIN")
            queued = asyncio.create_task(after.fetchval(
                "SELECT job_id FROM export_files WHERE job_id = $1 FOR UPDATE", int(job_id)))
            await eventually(lambda: waiting_statement(db, "SELECT job_id FROM export_files"),
                             "the test's second lock to queue behind the progress report")
        await queued
        await eventually(lambda: waiting_statement(db, "file_name = $3"), "the job's completion to wait")
        yield job_id
        await after.execute("ROLLBACK")
    finally:
        await after.close()


async def test_a_running_file_job_holding_an_identity_a_push_removed_since_deletes_its_file(
        client, settings, db, database_url):
    """The snapshot held the identity; a push removed it before the erasure, which finds it nowhere, not
    even in the file (not written yet when the erasure searched): the erasure marks the segment because an
    export of it is running, and the job deletes its file when it completes."""
    segment_id = await pushed_segment(client, [[ANN, "Ann", "FR"], *MEMBERS])
    async with held_at_completion(client, db, database_url, segment_id) as job_id:
        await push_ok(client, segment_id, csv_body(["email"], [[ANN]]), "REMOVE")
        done = await wait_erased(client, (await erase(client, [ANN]))["id"])
        assert done["found"] == {} and done["filesErased"] == 0
        assert all_files(settings) == [f"export-{job_id}-1.csv"]
    result = await finished(client, job_id)
    assert result["status"] == "SUCCEEDED" and result["erased"]["erasureId"] == done["id"], result
    assert all_files(settings) == []
    assert (await erasure(client, done["id"]))["erasedFrom"] == {segment_id: {"members": 0, "staged": 0,
                                                                             "snapshots": 0, "files": 1}}


async def test_a_file_job_whose_snapshot_follows_the_erasure_keeps_its_file(client, settings):
    """The segment's erasure marker is read in the snapshot: a later export is clean and stays."""
    segment_id = await pushed_segment(client, [[ANN, "Ann", "FR"], *MEMBERS])
    done = await wait_erased(client, (await erase(client, [ANN]))["id"])
    assert done["found"] == {segment_id: 1}
    result, body = await exported(client, segment_id)
    assert ANN not in identities_in("csv", body)
    assert (await job(client, result["id"]))["erased"] is None
    assert visible_files(settings) == [result["file"]["name"]]


async def test_another_endpoints_erasure_leaves_the_files_alone(client, make_key, settings):
    segment_id = await pushed_segment(client, [[ANN, "Ann", "FR"], ["bob@x.com", "Bob", "DE"]])
    result, body = await exported(client, segment_id)
    other = await make_key("admin", endpoint="other")
    done = await wait_erased(client, (await erase(client, [ANN], other))["id"], other)
    assert done["filesErased"] == 0 and done["found"] == {}
    response = await client.get(result["file"]["url"], headers=AUTH)
    assert (response.status, await response.read()) == (200, body)


# -- export snapshots (/v1/jobs): a new ETag and length after an erasure -----------------------------------------

async def test_a_range_resumed_with_if_range_after_an_erasure_gets_the_new_data_whole(client, db):
    """The erasure shortens the snapshot: the old ETag no longer names it, so a resumed range with the old
    ETag gets the whole new data (200), never old bytes joined to new ones; the new length is measured."""
    segment_id = await segment_with(client, [[ANN, "Ann"], *people(5_000)])
    snapshot = await create_job(client, segment_id)
    await wait_for_status(client, snapshot, "complete")
    before = await download(client, snapshot, headers={"Accept-Encoding": "identity"})
    old_etag = before.headers["ETag"]
    assert ANN.encode() in before.body
    assert await eventually(lambda: stored_length(db, snapshot), "the length to be stored") == len(before.body)

    await wait_erased(client, (await erase(client, [ANN]))["id"])

    resumed = await download(client, snapshot, headers={"Range": "bytes=100-", "If-Range": old_etag,
                                                        "Accept-Encoding": "identity"})
    assert resumed.status == 200 and resumed.headers["ETag"] != old_etag
    assert ANN.encode() not in resumed.body and len(resumed.body) == len(before.body) - len(f"{ANN},Ann\n")
    new_etag = resumed.headers["ETag"]
    part = await download(client, snapshot, headers={"Range": "bytes=100-", "If-Range": new_etag})
    assert (part.status, part.body) == (206, resumed.body[100:])
    assert part.headers["Content-Range"] == f"bytes 100-{len(resumed.body) - 1}/{len(resumed.body)}"
    assert await stored_length(db, snapshot) == len(resumed.body)


async def test_a_download_that_started_before_the_rewrite_sends_the_old_data_whole(
        client, db, database_url, settings):
    """The erasure waits (the test holds the job's row) while a download sends the old snapshot file under
    the old ETag; then the erasure rewrites the file under a new name and removes the old one: the next
    download is the new data, with its own ETag and length."""
    segment_id = await segment_with(client, [[ANN, "Ann"], *people(2_000)])
    snapshot = await create_job(client, segment_id)
    await wait_for_status(client, snapshot, "complete")
    old_name = await db.fetchval("SELECT data_file FROM jobs WHERE id = $1", snapshot.id)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", snapshot.id)
        erasure_id = (await erase(client, [ANN]))["id"]
        await eventually(lambda: waiting_statement(db, "privacy_erase_segment"), "the erasure to wait")
        old = await download(client, snapshot, headers={"Accept-Encoding": "identity"})
        assert old.status == 200 and ANN.encode() in old.body  # the old data, whole, under the old ETag
        assert int(old.headers["Content-Length"]) == len(old.body)
        await holder.execute("ROLLBACK")
    finally:
        await holder.close()
    result = await wait_erased(client, erasure_id)
    assert result["erasedFrom"][segment_id]["snapshots"] == 1
    assert not (settings.export_path / old_name).exists()
    new = await download(client, snapshot, headers={"Accept-Encoding": "identity"})
    assert new.headers["ETag"] != old.headers["ETag"] and ANN.encode() not in new.body
    assert new.body == old.body.replace(f"{ANN},Ann\n".encode(), b"")
    assert await stored_length(db, snapshot) == len(new.body) == int(new.headers["Content-Length"])


async def stored_length(db, snapshot) -> int | None:
    return await db.fetchval("SELECT data_bytes FROM jobs WHERE id = $1", snapshot.id)


async def store_ended(db) -> bool:
    """No backend is in (or waiting in) the statement storing a download's length."""
    return not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle' "
                                 "AND query LIKE '%SET data_bytes%' AND pid <> pg_backend_pid()")
