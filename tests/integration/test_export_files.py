"""Export jobs to files (``/api/export/jobs``): the files are the pushed data byte for byte (csv: the direct
pull's bytes; csv.gz: those, gzipped; ndjson: one object per member), projected by ``fields``; downloads
with Range/ETag; cancel and expiry remove the file; a writer stopped mid-write leaves no partial file under a
final name; tenancy and scopes on every route.

How a job is held mid-write (no sleeps): the test locks the segment's members table before the job is
created (its COPY waits), then locks the job's ``export_files`` row and frees the table: the writer copies
its first rows and blocks on its first progress report, which it makes after its first chunk."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.jobs.export_files import sweep_export_files
from gateway.jobs.queue import NOTIFY_CHANNEL
from tests.acceptance.cli_process import GatewayProcess
from tests.conftest import ADMIN_KEY, AUTH
from tests.helpers import eventually, lock_waiters, members_table
from tests.integration.manage_helpers import api
from tests.integration.pull_helpers import by_identity, parse_csv, sync_get
from tests.integration.push_helpers import Reply, app_client, create_segment, csv_body, push_ok

HEADER = ["email", "Name", "Country"]
# quotes, commas, newlines, non-ASCII, empty values: what CSV quoting and JSON escaping must get right
TRICKY = [
    ["a@x.com", 'say "hi"', "FR"],
    ["b@x.com", "one, two", ""],
    ["c@x.com", "line\nbreak", "DE"],
    ["d@x.com", "Zoë \\ back\tslash", "ÅLAND"],
    ["e@x.com", "", "US"],
]
MEMBERS = TRICKY + [[f"user{i:05d}@x.com", f"Name {i}", "CA"] for i in range(2000)]
FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


async def post_export(client, segment_id: str, headers: dict[str, str] = AUTH, **body: Any) -> Reply:
    """POST /api/export/jobs of that segment (``filter`` in ``body`` replaces the plain one)."""
    payload = {"filter": {"segments": [{"segmentId": segment_id}]}, **body}
    return await api(client, "POST", "/api/export/jobs", headers, json=payload)


async def create_export(client, segment_id: str, **body: Any) -> str:
    reply = await post_export(client, segment_id, **body)
    assert reply.status == 200, reply.text
    result = reply.body["result"]
    assert result["status"] in ("NEW", "PROCESSING", "SUCCEEDED"), result
    return result["id"]


async def job(client, job_id: str) -> dict[str, Any]:
    return (await api(client, "GET", f"/api/export/jobs/{job_id}")).result


async def finished(client, job_id: str) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        result = await job(client, job_id)
        return result if result["status"] in FINAL else None
    return await eventually(final, f"export job {job_id} to finish", timeout=30)


async def exported(client, segment_id: str, **body: Any) -> tuple[dict[str, Any], bytes]:
    """A job that must succeed: its answer and its file's bytes."""
    result = await finished(client, await create_export(client, segment_id, **body))
    assert result["status"] == "SUCCEEDED", result
    response = await client.get(result["file"]["url"], headers=AUTH)
    assert response.status == 200, await response.text()
    return result, await response.read()


async def pushed_segment(client, rows=MEMBERS, header=HEADER) -> str:
    segment_id = await create_segment(client, "exported")
    await push_ok(client, segment_id, csv_body(header, rows))
    return segment_id


def export_dir(settings) -> Path:
    return settings.export_path


def visible_files(settings) -> list[str]:
    """The export directory's files a reader could take for finished ones (temp files start with a dot)."""
    directory = export_dir(settings)
    return sorted(name for name in os.listdir(directory) if not name.startswith(".")) if directory.exists() else []


def all_files(settings) -> list[str]:
    directory = export_dir(settings)
    return sorted(os.listdir(directory)) if directory.exists() else []


async def waiting_statement(db: asyncpg.Connection, fragment: str) -> bool:
    """Whether a backend waits for a lock in a statement containing ``fragment`` (``db`` outside a transaction:
    within one, PostgreSQL keeps showing the activity it saw first)."""
    return bool(await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = any($1::int[]) "
                                  "AND query LIKE '%' || $2 || '%'", await lock_waiters(db), fragment))


# -- the files are the data ---------------------------------------------------------------------------------

async def test_csv_is_the_direct_pull_byte_for_byte_and_csv_gz_is_it_gzipped(client, settings):
    segment_id = await pushed_segment(client)
    pulled = (await sync_get(client, segment_id)).body
    header, rows = parse_csv(pulled)
    assert (header, by_identity(rows)) == (HEADER, by_identity(MEMBERS))

    result, csv_file = await exported(client, segment_id, format="csv")
    assert csv_file == pulled
    assert result["metrics"]["totalExportedProfileCounter"] == len(MEMBERS) == result["progress"]
    assert result["metrics"]["bytes"] == len(csv_file) == result["file"]["bytes"]
    assert result["metrics"]["sha256"] == hashlib.sha256(csv_file).hexdigest()

    result, gz_file = await exported(client, segment_id, format="csv.gz")
    assert gzip.decompress(gz_file) == pulled
    assert result["metrics"]["bytes"] == len(gz_file)
    assert result["metrics"]["sha256"] == hashlib.sha256(gz_file).hexdigest()
    assert result["metrics"]["totalExportedProfileCounter"] == len(MEMBERS) == result["progress"]


async def test_ndjson_is_one_object_per_member_with_null_where_a_member_has_no_value(client, settings):
    segment_id = await pushed_segment(client, [row[:2] for row in TRICKY[:2]], ["email", "Name"])
    await push_ok(client, segment_id, csv_body(HEADER, TRICKY[2:]))  # adds Country; the first two have none
    result, body = await exported(client, segment_id, format="ndjson")
    assert body.endswith(b"\n")
    objects = [json.loads(line) for line in body.decode().split("\n")[:-1]]
    expected = [dict(zip(HEADER, row)) for row in TRICKY[2:]] + \
        [{"email": row[0], "Name": row[1], "Country": None} for row in TRICKY[:2]]
    assert sorted(objects, key=lambda o: o["email"]) == sorted(expected, key=lambda o: o["email"])
    assert all(list(o) == HEADER for o in objects)  # attribute order kept
    assert result["metrics"]["totalExportedProfileCounter"] == len(TRICKY) == result["progress"]


async def test_fields_project_case_insensitively_in_the_order_asked(client):
    segment_id = await pushed_segment(client)
    _, body = await exported(client, segment_id, fields="COUNTRY, email", format="csv")
    header, rows = parse_csv(body)
    assert header == ["Country", "email"]  # the segment's spelling
    assert sorted(rows) == sorted([row[2], row[0]] for row in MEMBERS)
    _, body = await exported(client, segment_id, fields="name", format="ndjson")
    assert sorted(json.loads(line)["Name"] for line in body.decode().splitlines()) == sorted(r[1] for r in MEMBERS)


async def test_an_expression_keeps_the_members_it_is_true_for(client, make_key):
    segment_id = await pushed_segment(client)
    listed = await pushed_segment(client, [MEMBERS[i] for i in (0, 2, 3, 9)])
    never_pushed = await create_segment(client, "empty")
    canadians = [row for row in MEMBERS if row[2] == "CA"]
    _, body = await exported(client, segment_id, filter={"segments": [{"segmentId": segment_id}],
                                                         "expression": 'country = "CA" and name.endsWith("7")'})
    header, rows = parse_csv(body)
    assert (header, by_identity(rows)) == (HEADER, by_identity(r for r in canadians if r[1].endswith("7")))
    # ndjson numbers its own parameter first; inSegment reads another segment of the endpoint
    expression = {"type": "PQL", "format": "pql/text",
                  "value": f'inSegment("{listed}") or (inSegment("{never_pushed}") and Name = "")'}
    result, body = await exported(client, segment_id, format="ndjson", fields="email",
                                  filter={"segments": [{"segmentId": segment_id}], "expression": expression})
    assert sorted(json.loads(line)["email"] for line in body.decode().splitlines()) == \
        sorted(MEMBERS[i][0] for i in (0, 2, 3, 9))
    assert result["filter"]["expression"] == expression["value"]

    other = await make_key("admin", endpoint="other")
    theirs = await create_segment(client, "theirs", headers=other)
    for text, position in (('country = ', 10), ('Shoe = "42"', 0), (f'inSegment("{theirs}")', 0),
                           ('inSegment("nope")', 0)):
        reply = await post_export(client, segment_id, filter={"segments": [{"segmentId": segment_id}],
                                                              "expression": text})
        reply.assert_failure(400, "invalid_expression")
        assert reply.body["position"] == position, (text, reply.text)


async def test_an_unknown_field_is_400_naming_it_and_creates_no_job(client, db):
    segment_id = await pushed_segment(client)
    reply = await post_export(client, segment_id, fields="email,Shoe Size")
    reply.assert_failure(400, "unknown_field")
    assert "Shoe Size" in reply.body["error"]["message"] and reply.body["field"] == "Shoe Size"
    for body in ({"format": "xlsx"}, {"format": {"csv": 1}}, {"format": ["csv"]}, {"fields": 3},
                 {"fields": "email,,name"}, {"fields": "email,EMAIL"}, {"filter": {"segments": []}},
                 {"filter": {"segments": [{"segmentId": "x"}]}}, {"colour": 1}):
        payload = {"filter": {"segments": [{"segmentId": segment_id}]}, **body}
        response = await api(client, "POST", "/api/export/jobs", json=payload)
        assert response.status in (400, 404), (body, response.text)
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE kind = 'ExportFile'") == 0


async def test_a_push_committing_while_the_export_waits_for_the_segment_is_wholly_in_the_file(client, db,
                                                                                            database_url):
    """The snapshot's first statement share-locks the segment's row; a push holding it (here: the same row
    lock and writes a push makes) commits meanwhile, so REPEATABLE READ refuses the lock (could not
    serialize): the export starts again and its file holds the audience after that push, whole."""
    segment_id = await pushed_segment(client)
    gone = MEMBERS[0][0]
    push = await asyncpg.connect(database_url)
    try:
        async with push.transaction():
            await push.execute("SELECT id FROM segments WHERE id = $1 FOR NO KEY UPDATE", int(segment_id))
            await push.execute(f"DELETE FROM {members_table(segment_id)} WHERE identity = $1", gone)
            await push.execute("UPDATE segments SET member_count = member_count - 1 WHERE id = $1", int(segment_id))
            job_id = await create_export(client, segment_id, format="ndjson")
            await eventually(lambda: waiting_statement(db, "SELECT attributes, member_count FROM segments"),
                             "the export to wait for the segment's row")
    finally:
        await push.close()
    result = await finished(client, job_id)
    assert result["status"] == "SUCCEEDED", result
    body = (await client.get(result["file"]["url"], headers=AUTH)).content
    emails = sorted(json.loads(line)["email"] for line in (await body.read()).decode().splitlines())
    assert emails == sorted(row[0] for row in MEMBERS if row[0] != gone)


# -- the download ----------------------------------------------------------------------------------------------

async def test_the_file_is_served_with_etag_length_and_byte_ranges(client):
    segment_id = await pushed_segment(client)
    result, whole = await exported(client, segment_id, format="csv.gz")
    url = result["file"]["url"]
    response = await client.get(url, headers=AUTH)
    assert response.headers["Content-Length"] == str(len(whole))
    assert response.headers["Content-Type"] == "application/gzip"
    assert "Content-Encoding" not in response.headers  # the file is the gzip: nobody undoes it on the way
    etag = response.headers["ETag"]
    response = await client.get(url, headers={**AUTH, "Range": "bytes=10-99"})
    assert response.status == 206
    assert await response.read() == whole[10:100]
    assert response.headers["Content-Range"] == f"bytes 10-99/{len(whole)}"
    response = await client.get(url, headers={**AUTH, "Range": f"bytes={len(whole) - 7}-", "If-Range": etag})
    assert (response.status, await response.read()) == (206, whole[-7:])
    response = await client.get(url, headers={**AUTH, "If-None-Match": etag})
    assert response.status == 304


# -- cancel and expiry ---------------------------------------------------------------------------------------

async def test_cancel_removes_the_file_and_the_download_is_410(client, settings):
    segment_id = await pushed_segment(client)
    result, _ = await exported(client, segment_id)
    assert visible_files(settings) == [result["file"]["name"]]
    cancelled = (await api(client, "DELETE", f"/api/export/jobs/{result['id']}")).result
    assert (cancelled["status"], cancelled["file"]) == ("CANCELLED", None)
    assert all_files(settings) == []
    (await api(client, "GET", result["file"]["url"])).assert_failure(410, "export_expired")


async def test_expired_files_are_swept_and_their_download_is_410(client, settings, db, database_url):
    segment_id = await pushed_segment(client)
    old, _ = await exported(client, segment_id)
    kept, _ = await exported(client, segment_id, format="ndjson")
    await db.execute("UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = $1", int(old["id"]))
    (await api(client, "GET", old["file"]["url"])).assert_failure(410, "export_expired")
    async with pool_of(database_url) as pool:
        assert await sweep_export_files(pool, settings) == 1
    assert all_files(settings) == [kept["file"]["name"]]
    assert (await job(client, old["id"]))["file"] is None
    assert (await client.get(kept["file"]["url"], headers=AUTH)).status == 200


async def test_the_sweep_removes_files_no_job_wants_and_leaves_other_names_alone(client, settings, db,
                                                                                database_url):
    segment_id = await pushed_segment(client, TRICKY)
    deleted, _ = await exported(client, segment_id)
    kept, _ = await exported(client, segment_id)
    await db.execute("DELETE FROM jobs WHERE id = $1", int(deleted["id"]))  # as a segment's purge does
    directory = export_dir(settings)
    strangers = ["notes.txt", "export-1-1.csv.bak", ".export-x.tmp"]
    for name in strangers:
        (directory / name).write_text("not the gateway's")
    (directory / f".export-{kept['id']}-7.tmp").write_text("a dead writer's")  # not the job's attempt
    async with pool_of(database_url) as pool:
        assert await sweep_export_files(pool, settings) == 2
    assert all_files(settings) == sorted([kept["file"]["name"], *strangers])


@contextlib.asynccontextmanager
async def pool_of(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


# -- mid-write ---------------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def held_mid_write(db: asyncpg.Connection, database_url: str, segment_id: str, start) -> AsyncIterator[str]:
    """Start a job (``await start()`` → its id) and hold its writer blocked at its first progress report,
    after its first rows; yields the job id with the writer held (the lock is freed on leaving)."""
    table_lock = await asyncpg.connect(database_url)
    row_lock = await asyncpg.connect(database_url)
    try:
        table = table_lock.transaction()
        await table.start()
        await table_lock.execute(f"LOCK TABLE {members_table(segment_id)} IN ACCESS EXCLUSIVE MODE")
        job_id = await start()
        row = row_lock.transaction()
        await row.start()
        assert await row_lock.fetchval("SELECT job_id FROM export_files WHERE job_id = $1 FOR UPDATE", int(job_id))
        await table.rollback()

        await eventually(lambda: waiting_statement(db, "export_files f SET progress"),
                         "the writer's first progress report to wait for the row lock")
        yield job_id
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
            await row.rollback()
    finally:
        await table_lock.close()
        await row_lock.close()


async def test_progress_is_readable_while_the_job_runs_and_the_file_is_served_only_once_it_completed(
        client, settings, db, database_url):
    """The writer's first progress report is let through, then its completion is held (the test takes the
    row lock next, queued behind the report): the job is PROCESSING with its rows written so far, its file
    already renamed into place, and the download still 409 until the job's transaction commits."""
    segment_id = await pushed_segment(client)
    after = await asyncpg.connect(database_url)
    try:
        async with held_mid_write(db, database_url, segment_id, lambda: create_export(client, segment_id)) as job_id:
            await after.execute("BEGIN")
            queued = asyncio.create_task(after.fetchval(
                "SELECT job_id FROM export_files WHERE job_id = $1 FOR UPDATE", int(job_id)))
            await eventually(lambda: waiting_statement(db, "SELECT job_id FROM export_files"),
                             "the test's second lock to queue behind the progress report")
        await queued  # the report went through first, then this lock was granted
        await eventually(lambda: waiting_statement(db, "file_name = $3"), "the job's completion to wait")
        running = await job(client, job_id)
        assert running["status"] == "PROCESSING" and 0 < running["progress"] <= len(MEMBERS), running
        assert running["file"] is None
        assert all_files(settings) == [f"export-{job_id}-1.csv"]  # complete, renamed; not yet recorded
        (await api(client, "GET", f"/api/export/jobs/{job_id}/file")).assert_failure(409, "export_not_ready")
        await after.execute("ROLLBACK")
        result = await finished(client, job_id)
        assert result["status"] == "SUCCEEDED" and result["progress"] == len(MEMBERS)
    finally:
        await after.close()


async def test_cancel_mid_write_stops_the_writer_and_leaves_no_file(client, settings, db, database_url):
    segment_id = await pushed_segment(client)
    async with held_mid_write(db, database_url, segment_id, lambda: create_export(client, segment_id)) as job_id:
        assert (await job(client, job_id))["status"] == "PROCESSING"
        assert visible_files(settings) == [] and all_files(settings) == [f".export-{job_id}-1.tmp"]
        (await api(client, "GET", f"/api/export/jobs/{job_id}/file")).assert_failure(409, "export_not_ready")
        assert (await api(client, "DELETE", f"/api/export/jobs/{job_id}")).result["status"] == "CANCELLED"

    async def temp_gone() -> bool:
        return all_files(settings) == []
    await eventually(temp_gone, "the canceled writer to remove its temp file")
    assert (await job(client, job_id))["status"] == "CANCELLED"
    (await api(client, "GET", f"/api/export/jobs/{job_id}/file")).assert_failure(410, "export_expired")


async def test_a_writer_killed_mid_write_leaves_no_partial_file_and_the_job_is_done_again(
        aiohttp_client, settings, db, database_url, tmp_path):
    """A real crash: a ``serve`` process SIGKILLed while it writes. Only its temp file is left (a dot name,
    never a final name); the sweep removes it once its lease ran out, and another process writes the file."""
    env = {"GATEWAY_DATABASE_URL": database_url, "GATEWAY_API_KEY": ADMIN_KEY, "GATEWAY_LOG_LEVEL": "WARNING",
           "GATEWAY_DATA_DIR": str(settings.data_dir), "GATEWAY_EXPORT_DIR": str(export_dir(settings))}
    gateway = GatewayProcess("serve", "--port", "0", env=env)
    try:
        url = gateway.wait_listening()
        async with aiohttp.ClientSession(headers=AUTH) as session:
            async with session.post(url + "/v1/segments", json={"name": "crash"}) as response:
                segment_id = (await response.json())["result"]["segmentId"]
            async with session.post(url + f"/v1/segments/{segment_id}/data", data=csv_body(HEADER, MEMBERS),
                                    headers={"Content-Type": "text/csv"}) as response:
                assert response.status == 200, await response.text()

            async def start() -> str:
                payload = {"filter": {"segments": [{"segmentId": segment_id}]}, "format": "csv.gz"}
                async with session.post(url + "/api/export/jobs", json=payload) as response:
                    assert response.status == 200, await response.text()
                    return (await response.json())["result"]["id"]

            async with held_mid_write(db, database_url, segment_id, start) as job_id:
                assert visible_files(settings) == []
                os.kill(gateway.process.pid, signal.SIGKILL)
                gateway.process.wait(30)
    finally:
        gateway.stop(signal.SIGKILL)
    assert visible_files(settings) == [] and all_files(settings) == [f".export-{job_id}-1.tmp"]
    async with pool_of(database_url) as pool:
        assert await sweep_export_files(pool, settings) == 0  # its lease may still be live: it is kept
        await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", int(job_id))
        assert await sweep_export_files(pool, settings) == 1
    assert all_files(settings) == []

    client = await app_client(aiohttp_client, settings)  # another process takes the job over
    await db.execute("SELECT pg_notify($1, 'wake up')", NOTIFY_CHANNEL)
    result = await finished(client, job_id)
    assert result["status"] == "SUCCEEDED", result
    response = await client.get(result["file"]["url"], headers=AUTH)
    assert gzip.decompress(await response.read()) == (await sync_get(client, segment_id)).body
    assert all_files(settings) == [f"export-{job_id}-2.csv.gz"]


# -- listing, tenancy, scopes ------------------------------------------------------------------------------

async def test_list_filters_by_status_and_pages_by_cursor_and_offset(client):
    segment_id = await pushed_segment(client, TRICKY)
    ids = [(await finished(client, await create_export(client, segment_id)))["id"] for _ in range(3)]
    await api(client, "DELETE", f"/api/export/jobs/{ids[1]}")
    listed = (await api(client, "GET", "/api/export/jobs")).result
    assert [j["id"] for j in listed["jobs"]] == ids[::-1] and listed["nextCursor"] is None
    page = (await api(client, "GET", "/api/export/jobs?limit=2")).result
    assert [j["id"] for j in page["jobs"]] == [ids[2], ids[1]]
    rest = (await api(client, "GET", f"/api/export/jobs?limit=2&cursor={page['nextCursor']}")).result
    assert [j["id"] for j in rest["jobs"]] == [ids[0]] and rest["nextCursor"] is None
    assert [j["id"] for j in (await api(client, "GET", "/api/export/jobs?offset=1&limit=1")).result["jobs"]] == [ids[1]]
    assert [j["id"] for j in (await api(client, "GET", "/api/export/jobs?status=CANCELLED")).result["jobs"]] == [ids[1]]
    (await api(client, "GET", "/api/export/jobs?status=DONE")).assert_failure(400, "invalid_status")
    (await api(client, "GET", "/api/export/jobs?offset=-1")).assert_failure(400, "invalid_offset")


async def test_another_endpoints_job_is_404_on_every_route_and_its_file_is_untouched(client, make_key, settings):
    segment_id = await pushed_segment(client)
    result, _ = await exported(client, segment_id)
    other = await make_key("admin", endpoint="other")
    path = f"/api/export/jobs/{result['id']}"
    for method, route in (("GET", path), ("GET", path + "/file"), ("DELETE", path)):
        (await api(client, method, route, other)).assert_failure(404, "export_job_not_found")
    assert (await api(client, "GET", "/api/export/jobs", other)).result["jobs"] == []
    (await post_export(client, segment_id, other)).assert_failure(404, "segment_not_found")
    assert (await job(client, result["id"]))["status"] == "SUCCEEDED"
    assert visible_files(settings) == [result["file"]["name"]]


@pytest.mark.parametrize(("scope", "reads", "changes"), [("read", 403, 403), ("write", 200, 403), ("admin", 200, 200)])
async def test_reading_needs_write_scope_and_changing_needs_admin(client, make_key, scope, reads, changes):
    segment_id = await pushed_segment(client, TRICKY)
    result, _ = await exported(client, segment_id)
    headers = await make_key(scope)
    path = f"/api/export/jobs/{result['id']}"
    for route in ("/api/export/jobs", path, path + "/file"):
        assert (await client.get(route, headers=headers)).status == reads, route
    assert (await post_export(client, segment_id, headers)).status == changes
    assert (await api(client, "DELETE", path, headers)).status == changes
