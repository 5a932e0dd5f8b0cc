"""``/api/segments``: filters, keyset pages, one segment, PATCH, soft delete, purge (now and by the
sweeper), tenancy and scopes."""

from __future__ import annotations

import asyncio
import base64

import pytest

from gateway import state
from gateway.audience.changefeed import iso
from gateway.audience.metadata import purge_deleted
from gateway.jobs.export_files import sweep_export_files

from tests.conftest import AUTH
from tests.helpers import copy_in_progress
from tests.integration.manage_helpers import api, ids_of, list_all, segment_row, set_status
from tests.integration.pull_helpers import (create_job, eventually, export_table, members_table, table_exists,
                                            wait_for_status)
from tests.integration.push_helpers import (app_client, chunked, create_segment, push, push_ok, snapshot,
                                            staging_tables)

pytestmark = pytest.mark.pg15


async def make(client, name: str, **fields) -> int:
    response = await client.post("/v1/segments", json={"name": name, **fields}, headers=AUTH)
    return int((await response.json())["result"]["segmentId"])


async def test_one_segment_in_full(client, db):
    segment_id = await make(client, "Buyers", description="Bought twice", category="retail", type="Databases")
    await push_ok(client, str(segment_id), "Email,First\nA@x.com,Ann\nb@x.com,Bob\nb@x.com,Bob2\n")
    result = (await api(client, "GET", f"/api/segments/{segment_id}")).result
    stored = await segment_row(db, segment_id)
    assert result == {
        "id": segment_id, "endpoint": "default", "name": "Buyers", "description": "Bought twice",
        "category": "retail", "type": "Databases", "status": "active", "identityAttribute": "Email",
        "identityHashing": None, "attributes": ["Email", "First"], "memberCount": 2,
        "createdAt": iso(stored["created_at"]), "updatedAt": iso(stored["updated_at"]),
        "metadataUpdatedAt": iso(stored["metadata_updated_at"]),
        "lastUploadAt": iso(stored["last_upload_at"]), "deletedAt": None, "purgedAt": None}
    assert await db.fetchval(f"SELECT count(*) FROM {members_table(segment_id)}") == result["memberCount"]


async def test_another_endpoints_segment_is_answered_like_a_missing_one(client, make_key):
    segment_id = await make(client, "Ours")
    theirs = await make_key("admin", endpoint="other-tenant")
    for method, extra in (("GET", {}), ("PATCH", {"json": {"name": "Stolen"}}), ("DELETE", {})):
        mine = await api(client, method, f"/api/segments/{segment_id}", theirs, **extra)
        missing = await api(client, method, "/api/segments/987654321", theirs, **extra)
        mine.assert_failure(404, "segment_not_found")
        assert mine.body["error"]["code"] == missing.body["error"]["code"] and missing.status == 404
    assert await ids_of(client, headers=theirs) == []
    assert (await api(client, "GET", f"/api/segments/{segment_id}")).result["name"] == "Ours"


async def test_filters(client, db):
    alpha = await make(client, "Alpha 100%", description="first")
    beta = await make(client, "beta", description="Has ALPHA inside", type="Databases")
    await db.execute("UPDATE segments SET type = 'Queries' WHERE id = $1", beta)  # as a definition's audience
    gamma = await make(client, "gamma", description="100_percent")
    await set_status(client, gamma, "inactive")
    deleted = await make(client, "delta")
    await set_status(client, deleted, "deleted")
    assert await ids_of(client) == [alpha, beta, gamma, deleted], "every status is listed on /api"
    assert await ids_of(client, "status=active") == [alpha, beta]
    assert await ids_of(client, "status=inactive") == [gamma]
    assert await ids_of(client, "status=deleted") == [deleted]
    assert await ids_of(client, "type=Queries") == [beta]
    assert await ids_of(client, "q=alpha") == [alpha, beta], "name or description, any case"
    assert await ids_of(client, "q=100%25") == [alpha], "% is a character, not a pattern"
    assert await ids_of(client, "q=0_p") == [gamma]
    assert await ids_of(client, "q=alpha&status=active&type=Contact%20Lists") == [alpha]


@pytest.mark.parametrize("query, code", [
    ("status=gone", "invalid_status"),
    ("type=Lists", "invalid_type"),
    ("updatedSince=yesterday", "invalid_time"),
    ("updatedSince=2026-01-01T00:00:00", "invalid_time"),  # no time zone
    ("updatedSince=2026-01-01", "invalid_time"),
    ("limit=0", "invalid_limit"),
    ("limit=1001", "invalid_limit"),
    ("limit=ten", "invalid_limit"),
    ("limit=-1", "invalid_limit"),
    ("cursor=not-a-cursor", "invalid_cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b'{"after": -5, "watermark": "2026-01-01T00:00:00+00:00"}').decode(),
     "invalid_cursor"),
    ("updated_since=2026-01-01T00:00:00Z", "unknown_parameter"),
])
async def test_bad_filters_are_400(client, query, code):
    (await api(client, "GET", f"/api/segments?{query}")).assert_failure(400, code)


async def test_pages_are_stable_while_segments_are_created(client):
    first = [await make(client, f"s{i}") for i in range(7)]
    seen: list[int] = []
    result = (await api(client, "GET", "/api/segments?limit=3")).result
    created_meanwhile = []
    while True:
        assert len(result["segments"]) <= 3
        seen += [segment["id"] for segment in result["segments"]]
        created_meanwhile.append(await make(client, f"new after page {len(seen)}"))
        if result["nextCursor"] is None:
            break
        result = (await api(client, "GET", f"/api/segments?limit=3&cursor={result['nextCursor']}")).result
    assert seen == sorted(seen) and len(seen) == len(set(seen)), "id order, no repeats"
    assert seen[:7] == first, "nothing skipped"
    assert set(seen[7:]) <= set(created_meanwhile) and seen[7:], "new ones only after the ids already seen"
    assert await ids_of(client) == first + created_meanwhile


async def test_exact_page_boundary_has_no_empty_last_page(client):
    ids = [await make(client, f"s{i}") for i in range(4)]
    result = (await api(client, "GET", "/api/segments?limit=2")).result
    result = (await api(client, "GET", f"/api/segments?limit=2&cursor={result['nextCursor']}")).result
    assert [s["id"] for s in result["segments"]] == ids[2:] and result["nextCursor"] is None
    assert (await api(client, "GET", "/api/segments")).result["nextCursor"] is None


async def test_patch_changes_only_the_given_fields(client, db):
    segment_id = await make(client, "Old", description="d", category="c")
    before = await segment_row(db, segment_id)
    result = (await api(client, "PATCH", f"/api/segments/{segment_id}",
                        json={"name": "New", "category": "", "status": "inactive"})).result
    after = await segment_row(db, segment_id)
    assert (after["name"], after["description"], after["category"], after["status"]) == ("New", "d", "", "inactive")
    assert result["name"] == "New" and result["status"] == "inactive"
    assert after["updated_at"] > before["updated_at"] and after["metadata_updated_at"] > before["updated_at"]

    again = (await api(client, "PATCH", f"/api/segments/{segment_id}", json={"name": "New"})).result
    assert await segment_row(db, segment_id) == after, "a PATCH that changes nothing moves no change time"
    assert again == result


@pytest.mark.parametrize("body, code", [
    ({"name": ""}, "invalid_name"),
    ({"name": "   "}, "invalid_name"),
    ({"name": 5}, "invalid_field"),
    ({"description": None}, "invalid_field"),
    ({"status": "archived"}, "invalid_status"),
    ({"name": "ok", "type": "Queries"}, "unknown_field"),
    ({"memberCount": 0}, "unknown_field"),
    (["name"], "invalid_json"),
    ("{not json", "invalid_json"),
])
async def test_bad_patch_is_400_and_changes_nothing(client, db, body, code):
    segment_id = await make(client, "Kept")
    before = await segment_row(db, segment_id)
    options = {"data": body} if isinstance(body, str) else {"json": body}
    (await api(client, "PATCH", f"/api/segments/{segment_id}", **options)).assert_failure(400, code)
    assert await segment_row(db, segment_id) == before


async def test_soft_delete_then_restore_keeps_the_audience(client, db):
    segment_id = str(await make(client, "Doomed"))
    await push_ok(client, segment_id, "email\na@x.com\nb@x.com\n")
    stored = await snapshot(db, segment_id)
    deleted = (await api(client, "DELETE", f"/api/segments/{segment_id}")).result
    assert deleted["status"] == "deleted" and deleted["deletedAt"] and deleted["purgedAt"] is None
    again = (await api(client, "DELETE", f"/api/segments/{segment_id}")).result
    assert again == deleted, "deleting again changes nothing (the grace period is not restarted)"
    assert (await api(client, "GET", f"/v1/segments/{segment_id}")).status == 404
    assert (await api(client, "GET", f"/api/segments/{segment_id}")).result["status"] == "deleted"

    restored = await set_status(client, segment_id, "active")
    assert restored["deletedAt"] is None and restored["memberCount"] == 2
    assert await snapshot(db, segment_id) == stored
    assert (await api(client, "GET", f"/v1/segments/{segment_id}")).status == 200


async def test_delete_with_purge_drops_members_staging_and_exports(client, db, settings):
    segment_id = str(await make(client, "Purged"))
    await push_ok(client, segment_id, "email\na@x.com\nb@x.com\n")
    job = await create_job(client, segment_id)
    await wait_for_status(client, job, "complete")
    await push_ok(client, segment_id, "email\nc@x.com\n", "REPLACE", total=2, number=1)  # an open session
    snapshot_file = settings.export_path / await db.fetchval("SELECT data_file FROM jobs WHERE id = $1", job.id)
    assert await staging_tables(db) and snapshot_file.is_file()

    result = (await api(client, "DELETE", f"/api/segments/{segment_id}?purge=true")).result
    assert result["status"] == "deleted" and result["purgedAt"] and result["memberCount"] == 0
    assert not await table_exists(db, members_table(segment_id))
    assert await staging_tables(db) == []
    assert not await table_exists(db, export_table(job.id))
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) == "canceled"
    assert await db.fetchval("SELECT data_dropped_at FROM jobs WHERE id = $1", job.id) is not None
    # its file: removed by the export directory's sweep, as a deleted segment's export files are
    assert await sweep_export_files(client.app[state.POOL], settings) == 1
    assert not snapshot_file.exists()
    assert await db.fetchval("SELECT status FROM replace_sessions WHERE segment_id = $1", int(segment_id)) == "expired"

    (await api(client, "PATCH", f"/api/segments/{segment_id}", json={"status": "active"})
     ).assert_failure(409, "segment_purged")
    renamed = (await api(client, "PATCH", f"/api/segments/{segment_id}", json={"name": "Gone"})).result
    assert renamed["name"] == "Gone" and renamed["status"] == "deleted", "a purged segment may still be renamed"
    (await api(client, "DELETE", f"/api/segments/{segment_id}?purge=yes")).assert_failure(400, "invalid_purge")


async def test_sweeper_purges_after_the_grace_period(aiohttp_client, settings, db):
    client = await app_client(aiohttp_client, settings, delete_grace=1.0)
    kept, doomed = str(await make(client, "kept")), str(await make(client, "doomed"))
    for segment_id in (kept, doomed):
        await push_ok(client, segment_id, "email\na@x.com\n")
    await api(client, "DELETE", f"/api/segments/{doomed}")
    assert await table_exists(db, members_table(doomed)), "not before the grace period"

    async def purged() -> bool:
        return (await segment_row(db, doomed))["purged_at"] is not None

    await eventually(purged, "the sweeper to purge the deleted segment", timeout=10)
    assert not await table_exists(db, members_table(doomed))
    assert await table_exists(db, members_table(kept))


async def test_no_purge_within_the_grace_period(aiohttp_client, settings, db):
    client = await app_client(aiohttp_client, settings, delete_grace=3600.0)
    segment_id = str(await make(client, "waiting"))
    await push_ok(client, segment_id, "email\na@x.com\n")
    await api(client, "DELETE", f"/api/segments/{segment_id}")
    await db.execute("UPDATE segments SET deleted_at = clock_timestamp() - interval '59 minutes' WHERE id = $1",
                     int(segment_id))
    assert await purge_deleted(client.app[state.POOL], 3600.0) == 0  # the sweeper's own pass, with its grace
    assert (await segment_row(db, segment_id))["purged_at"] is None
    assert await table_exists(db, members_table(segment_id))


async def test_a_push_racing_a_delete_applies_nothing(streaming_client, db):
    """Deleted while the body streams: the push finds the segment gone under its lock (404)."""
    segment_id = str(await make(streaming_client, "racing"))
    pushing = asyncio.create_task(push(streaming_client, segment_id, chunked(b"email\n", b"a@x.com\n", pause=0.5)))
    await eventually(lambda: copy_in_progress(db), "the push's body to stream")
    await api(streaming_client, "DELETE", f"/api/segments/{segment_id}?purge=true")
    (await pushing).assert_failure(404, "segment_not_found")
    assert not await table_exists(db, members_table(segment_id))


@pytest.mark.parametrize("scope, reads, changes", [("read", 403, 403), ("write", 200, 403), ("admin", 200, 200)])
async def test_scopes(client, make_key, scope, reads, changes):
    segment_id = await create_segment(client)
    headers = await make_key(scope)
    assert (await api(client, "GET", "/api/segments", headers)).status == reads
    assert (await api(client, "GET", f"/api/segments/{segment_id}", headers)).status == reads
    patched = await api(client, "PATCH", f"/api/segments/{segment_id}", headers, json={"name": "x"})
    assert patched.status == changes
    assert (await api(client, "DELETE", f"/api/segments/{segment_id}", headers)).status == changes
    if changes == 403:
        patched.assert_failure(403, "insufficient_scope")


@pytest.mark.parametrize("path", ["/api/segments", "/api/segments/1", "/api/destinations/default/mappings"])
async def test_api_routes_need_a_key(client, path):
    reply = await api(client, "GET", path, headers={})
    reply.assert_failure(401, "missing_token")
