"""``updatedSince`` on /api/segments and the destination mappings: changed after T listed, not before —
including changes whose transaction was still running during the previous poll."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from urllib.parse import quote

import orjson
import pytest

from gateway.audience.changefeed import iso
from gateway.db.queries import QUERIES
from tests.integration.manage_helpers import api, ids_of, list_all, segment_row, set_status
from tests.integration.pull_helpers import eventually
from tests.integration.push_helpers import create_segment, push, push_ok

pytestmark = pytest.mark.pg15

MAPPINGS = "/api/destinations/{}/mappings"


def since(at: str) -> str:
    return f"updatedSince={quote(at)}"


async def test_changed_after_t_listed_not_before(client, db):
    names = ("untouched", "renamed", "added", "same_add", "remove_absent", "replaced", "half_replace",
             "same_patch", "attr_changed", "removed")
    ids = {name: await create_segment(client, name) for name in names}
    for name in ("same_add", "remove_absent", "attr_changed", "removed", "half_replace"):
        await push_ok(client, ids[name], "email,city\na@x.com,Paris\n")
    _, t = await list_all(client)

    await api(client, "PATCH", f"/api/segments/{ids['renamed']}", json={"name": "Renamed"})
    await push_ok(client, ids["added"], "email\nnew@x.com\n")
    await push_ok(client, ids["same_add"], "email,city\na@x.com,Paris\n")  # nothing changes
    await push_ok(client, ids["remove_absent"], "email\nnobody@x.com\n", "REMOVE")  # nothing removed
    await push_ok(client, ids["replaced"], "email\nr@x.com\n", "REPLACE")
    await push_ok(client, ids["half_replace"], "email\nr@x.com\n", "REPLACE", total=2, number=1)  # not committed
    # (a segment's first upload fixes its identity and attributes: that is a change; these had theirs)
    await api(client, "PATCH", f"/api/segments/{ids['same_patch']}", json={"name": "same_patch"})
    await push_ok(client, ids["attr_changed"], "email,city\na@x.com,Rome\n")
    await push_ok(client, ids["removed"], "email\na@x.com\n", "REMOVE")

    changed = [int(ids[name]) for name in ("renamed", "added", "replaced", "attr_changed", "removed")]
    listed, _ = await list_all(client, since(t))
    assert [segment["id"] for segment in listed] == changed
    assert all(segment["updatedAt"] > t for segment in listed)

    # Each change's own time as T: exactly the changes after it.
    by_time = sorted(listed, key=lambda segment: segment["updatedAt"])
    for position, segment in enumerate(by_time):
        after = sorted(later["id"] for later in by_time[position + 1:])
        assert await ids_of(client, since(segment["updatedAt"])) == after


async def test_a_change_committed_after_a_poll_is_in_the_next_poll(client, db):
    """A change's time is taken before its transaction commits. The first poll runs while such a
    transaction is open: it cannot see the change, and its ``nextUpdatedSince`` stays before the change's
    time, so the next poll lists it. Polling from the client's own clock would have missed it."""
    segment_id = int(await create_segment(client, "slow"))
    transaction = db.transaction()
    await transaction.start()
    await db.execute(QUERIES["meta_segment_update"], segment_id, "Renamed slowly", "", "", "active")
    change_time = await db.fetchval("SELECT updated_at FROM segments WHERE id = $1", segment_id)

    listed, watermark = await list_all(client, since("2000-01-01T00:00:00Z"))
    client_clock = dt.datetime.now(dt.timezone.utc)
    assert [s["name"] for s in listed] == ["slow"], "not committed yet"
    assert dt.datetime.fromisoformat(watermark) < change_time < client_clock
    await transaction.commit()

    listed, _ = await list_all(client, since(watermark))
    assert [(s["id"], s["name"]) for s in listed] == [(segment_id, "Renamed slowly")]
    assert await ids_of(client, since(client_clock.isoformat())) == [], "the client's clock misses it"


async def test_a_stalled_upload_holds_back_its_own_endpoints_feed_only(streaming_client, db, make_key):
    """An upload of endpoint A stalls mid-body, holding its transaction open (an ADD body larger than the
    read-ahead; a smaller one holds none while it is read). Endpoint B's feed moves on past B's new change
    meanwhile; A's feed stays before the upload's start, so A's next poll lists the change the upload commits
    late. (A watermark held by every writing transaction froze B's feed too.)"""
    client = streaming_client
    other = await make_key("admin", endpoint="other-tenant")
    a_segment, b_segment = int(await create_segment(client, "A")), int(await create_segment(client, "B", other))
    release = asyncio.Event()

    async def stalled_body():
        yield b"email\nearly@x.com\n"
        await release.wait()
        yield b"late@x.com\n"

    upload = asyncio.create_task(push(client, str(a_segment), stalled_body()))
    try:
        async def upload_started():
            return await db.fetchval(
                "SELECT xact_start FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_xid IS NOT NULL AND query LIKE 'COPY %incoming%'")

        upload_start = await eventually(upload_started, "the upload's COPY to wait for the rest of its body")
        _, a_mark = await list_all(client, since("2000-01-01T00:00:00Z"))
        assert dt.datetime.fromisoformat(a_mark) < upload_start

        await api(client, "PATCH", f"/api/segments/{b_segment}", other, json={"name": "B, renamed"})
        b_change = await db.fetchval("SELECT updated_at FROM segments WHERE id = $1", b_segment)
        assert b_change > upload_start
        listed, b_mark = await list_all(client, since("2000-01-01T00:00:00Z"), other)
        assert [(s["id"], s["name"]) for s in listed] == [(b_segment, "B, renamed")]
        assert dt.datetime.fromisoformat(b_mark) > b_change, "B's feed is not held by A's upload"
        assert await ids_of(client, since(b_mark), other) == []
        assert not upload.done()
    finally:
        release.set()
        reply = await upload
    assert reply.result["numAdded"] == "2"
    a_change = await db.fetchval("SELECT updated_at FROM segments WHERE id = $1", a_segment)
    assert a_change > upload_start
    assert await ids_of(client, since(a_mark)) == [a_segment], "A's late-committing change is not missed"


async def test_the_watermark_follows_the_clock_when_nothing_is_running(client, db):
    await create_segment(client, "one")
    before = await db.fetchval("SELECT clock_timestamp()")
    _, watermark = await list_all(client)
    after = await db.fetchval("SELECT clock_timestamp()")
    assert before <= dt.datetime.fromisoformat(watermark) < after


async def test_mappings_view(client, make_key, db):
    active = await create_segment(client, "Active one")
    await api(client, "PATCH", f"/api/segments/{active}", json={"description": "bought"})
    inactive = await create_segment(client, "Resting")
    await set_status(client, inactive, "inactive")
    deleted = await create_segment(client, "Gone")
    await set_status(client, deleted, "deleted")
    endpoint_id = await db.fetchval("SELECT id FROM endpoints WHERE name = 'default'")
    reader = await make_key("read")

    for name in ("default", str(endpoint_id)):
        mappings, _ = await list_all(client, headers=reader, path=MAPPINGS.format(name), items="mappings")
        rows = {row["id"]: row for row in await db.fetch("SELECT id, metadata_updated_at FROM segments")}
        assert mappings == [
            {"destinationMappingId": int(active), "elementName": "Active one", "elementDescription": "bought",
             "elementStatus": "active", "updatedAt": iso(rows[int(active)]["metadata_updated_at"])},
            {"destinationMappingId": int(inactive), "elementName": "Resting", "elementDescription": "",
             "elementStatus": "inactive", "updatedAt": iso(rows[int(inactive)]["metadata_updated_at"])},
            {"destinationMappingId": int(deleted), "elementName": "Gone", "elementDescription": "",
             "elementStatus": "deleted", "updatedAt": iso(rows[int(deleted)]["metadata_updated_at"])},
        ]
    paged, _ = await list_all(client, headers=reader, limit=1, path=MAPPINGS.format("default"), items="mappings")
    assert [m["destinationMappingId"] for m in paged] == [int(active), int(inactive), int(deleted)]


async def test_mappings_feed_moves_with_metadata_only(client):
    first, second = await create_segment(client, "first"), await create_segment(client, "second")
    _, t = await list_all(client, path=MAPPINGS.format("default"), items="mappings")
    await push_ok(client, first, "email\na@x.com\n")  # membership: not a mapping change
    await api(client, "PATCH", f"/api/segments/{second}", json={"status": "inactive"})
    changed, _ = await list_all(client, since(t), path=MAPPINGS.format("default"), items="mappings")
    assert [(m["destinationMappingId"], m["elementStatus"]) for m in changed] == [(int(second), "inactive")]
    assert await ids_of(client, since(t)) == [int(first), int(second)], "/api/segments sees both"


async def test_mappings_of_another_endpoint_look_missing(client, make_key):
    await create_segment(client, "ours")
    theirs = await make_key("admin", endpoint="other-tenant")
    ours = await api(client, "GET", MAPPINGS.format("default"), theirs)
    unknown = await api(client, "GET", MAPPINGS.format("no-such-endpoint"), theirs)
    ours.assert_failure(404, "destination_not_found")
    assert unknown.status == 404 and unknown.body["error"]["code"] == ours.body["error"]["code"]
    own = (await api(client, "GET", MAPPINGS.format("other-tenant"), theirs)).result
    assert own["mappings"] == []


@pytest.mark.parametrize("query, code", [("updatedSince=now", "invalid_time"), ("limit=5000", "invalid_limit"),
                                         ("status=active", "unknown_parameter")])
async def test_bad_mapping_parameters_are_400(client, query, code):
    (await api(client, "GET", MAPPINGS.format("default") + "?" + query)).assert_failure(400, code)


async def test_an_offset_sent_without_url_encoding_is_understood(client):
    await create_segment(client, "x")
    raw = "2000-01-01T00:00:00+00:00"  # the + arrives as a space
    assert await ids_of(client, f"updatedSince={raw}") == await ids_of(client, since(raw)) != []


@pytest.mark.parametrize("at", ["99999-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
                                "9999-12-31T23:59:59-01:00"])
@pytest.mark.parametrize("path", ["/api/segments", MAPPINGS.format("default")])
async def test_an_updated_since_out_of_range_is_400(client, path, at):
    """Years beyond what the gateway can compare (or an offset pushing the time past year 1 or 9999 in
    UTC) are a 400 like any malformed time, not a 500 from the driver; the extremes themselves are fine."""
    (await api(client, "GET", f"{path}?{since(at)}")).assert_failure(400, "invalid_time")
    for extreme in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"):
        assert (await api(client, "GET", f"{path}?{since(extreme)}")).status == 200


async def test_a_cursor_with_a_watermark_out_of_range_is_400(client):
    raw = orjson.dumps({"after": 0, "watermark": "0001-01-01T00:00:00+01:00"})
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    (await api(client, "GET", f"/api/segments?cursor={cursor}")).assert_failure(400, "invalid_cursor")
