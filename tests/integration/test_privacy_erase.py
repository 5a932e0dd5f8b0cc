"""Erasure (``/api/privacy/erase``): each place an identity can be is seeded first, then the identity is
proven absent through the public routes (pulls, export downloads, rejects, a later REPLACE commit)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib

import asyncpg

from gateway.db.queries import QUERIES
from tests.conftest import AUTH
from tests.helpers import eventually, lock_waiters
from tests.integration.manage_helpers import api, set_status
from tests.integration.privacy_helpers import column, erase, erase_and_wait, pulled, wait_erased
from tests.integration.pull_helpers import by_identity, create_job, download, wait_for_status
from tests.integration.push_helpers import create_segment, csv_body, push, push_ok

ANN = "ann@example.com"


async def uploads_of(client, segment_id: str) -> list[dict]:
    return (await api(client, "GET", f"/api/segments/{segment_id}/uploads")).result["uploads"]


async def rejects_text(client, segment_id: str, upload_id: int) -> str:
    response = await client.get(f"/api/segments/{segment_id}/rejects", params={"upload": str(upload_id)},
                                headers=AUTH)
    assert response.status == 200, await response.text()
    return await response.text()


async def test_erase_removes_an_identity_from_every_place(client, db):
    # members of a Contact List (pushed with other spacing and case: normalised as on push)
    listed = await create_segment(client, "listed")
    await push_ok(client, listed, csv_body(["Email", "name"], [[" Ann@Example.COM ", "Ann"], ["bob@x.com", "Bob"]]))
    # a Queries audience
    response = await client.post("/v1/segments", json={"name": "query", "type": "Queries"}, headers=AUTH)
    query = (await response.json())["result"]["segmentId"]
    await push_ok(client, query, csv_body(["email"], [[ANN], ["carl@x.com"]]))
    # a segment whose identity is not an email: compared as sent
    ids = await create_segment(client, "ids")
    await push_ok(client, ids, csv_body(["customer", "email"], [["AnnID", ANN], ["annid", "other@x.com"]]))
    # a deleted segment whose members are not purged yet
    deleted = await create_segment(client, "deleted")
    await push_ok(client, deleted, csv_body(["email"], [[ANN], ["dora@x.com"]]))
    await set_status(client, deleted, "deleted")
    # an export snapshot of the Contact List
    job = await create_job(client, listed)
    await wait_for_status(client, job, "complete")
    # a rejected row whose text holds the identity, and one that does not
    reply = await push(client, listed, csv_body(["email", "alt"], [["", f"x;{ANN.upper()}"], ["", "nobody"]]))
    assert reply.result["numInvalid"] == "2"
    upload_id = (await uploads_of(client, listed))[0]["id"]
    # a REPLACE share staged before the erasure, committed after it
    replaced = await create_segment(client, "replaced")
    await push_ok(client, replaced, csv_body(["email"], [["old@x.com"]]))
    staged = await push_ok(client, replaced, csv_body(["email"], [[ANN], ["erin@x.com"]]), "REPLACE", total=2, number=1)
    assert staged["replaceCommitted"] is False

    result = await erase_and_wait(client, [ANN, "AnnID"])

    assert result["found"] == {listed: 1, query: 1, ids: 1, deleted: 1}
    assert result["totalErased"] == 4
    assert result["erasedFrom"][listed] == {"members": 1, "staged": 0, "snapshots": 1}
    assert result["erasedFrom"][replaced] == {"members": 0, "staged": 1, "snapshots": 0}
    assert result["rejectsErased"] == 1
    assert result["identities"] == 2 and result["numReceived"] == 2 and result["numInvalid"] == 0
    timings = result["timings"]
    assert timings["createdAt"] <= timings["startedAt"] <= timings["finishedAt"] and timings["seconds"] >= 0

    assert column(await pulled(client, listed)) == {"bob@x.com"}
    assert column(await pulled(client, query)) == {"carl@x.com"}
    assert by_identity(await pulled(client, ids)) == [["annid", "other@x.com"]]  # another identity by case
    await set_status(client, deleted, "active")
    assert column(await pulled(client, deleted)) == {"dora@x.com"}
    header, rows = (await download(client, job)).table()
    assert column(rows) == {"bob@x.com"}
    assert (await api(client, "GET", f"/v1/jobs/{job.id}")).result["rowCount"] == 1
    text = await rejects_text(client, listed, upload_id)
    assert ANN not in text.lower() and "nobody" in text
    # the share committed after the erasure does not bring the identity back
    committed = await push_ok(client, replaced, csv_body(["email"], [["frank@x.com"]]), "REPLACE", total=2, number=2)
    assert committed["replaceCommitted"] is True
    assert column(await pulled(client, replaced)) == {"erin@x.com", "frank@x.com"}
    # upload history keeps its counts; the segment's size follows the erasure
    assert [entry["numAdded"] for entry in await uploads_of(client, listed)][-1] == 2
    assert (await api(client, "GET", f"/api/segments/{listed}")).result["memberCount"] == 1
    # the identities themselves are gone once the job completed
    assert await db.fetchval("SELECT count(*) FROM privacy_erase_identities") == 0


async def test_an_erasure_waits_for_a_push_applying_and_erases_what_it_applied(client, db, database_url):
    segment = await create_segment(client)
    await push_ok(client, segment, csv_body(["email"], [["bob@x.com"]]))
    pusher = await asyncpg.connect(database_url)
    try:
        async with pusher.transaction():  # an ADD applying: the segment's shared apply lock, then its rows
            await pusher.execute(QUERIES["segment_apply_shared"], int(segment))
            job = await erase(client, [ANN])
            await eventually(lambda: lock_waiters(db), "the erasure to wait for the push")
            await pusher.execute(f"INSERT INTO audience.members_{int(segment)} VALUES ($1, ARRAY[$1])", ANN)
            await pusher.execute("UPDATE segments SET member_count = member_count + 1 WHERE id = $1", int(segment))
        result = await wait_erased(client, job["id"])
    finally:
        await pusher.close()
    assert result["found"] == {segment: 1}
    assert column(await pulled(client, segment)) == {"bob@x.com"}


async def test_erase_from_a_streamed_csv_counts_every_row(client):
    segment = await create_segment(client)
    await push_ok(client, segment, csv_body(["email"], [[ANN], ["bob@x.com"], ["carl@x.com"]]))
    body = csv_body(["id", "Email"], [["1", " ANN@example.com"], ["2", ""], ["3", "bob@x.com"], ["4"]])
    response = await client.post("/api/privacy/erase", data=body, headers={**AUTH, "Content-Type": "text/csv"})
    job = (await response.json())["result"]
    assert response.status == 200, job
    assert (job["status"], job["numReceived"], job["numInvalid"]) == ("NEW", 4, 2)
    assert {sample["line"] for sample in job["invalidSamples"]} == {3, 5}
    result = await wait_erased(client, job["id"])
    assert result["found"] == {segment: 2} and result["identities"] == 2
    assert column(await pulled(client, segment)) == {"carl@x.com"}


async def test_the_audit_row_keeps_hashes_never_the_identities(client, db):
    segment = await create_segment(client)
    await push_ok(client, segment, csv_body(["email"], [[ANN], ["bob@x.com"]]))
    response = await client.post("/api/privacy/erase", json={"identities": [ANN, "zoe@x.com"]},
                                 headers={**AUTH, "X-Request-ID": "erase-req-1"})
    job_id = (await response.json())["result"]["id"]
    await wait_erased(client, job_id)

    listing = await api(client, "GET", "/api/privacy/requests")
    [entry] = listing.result["requests"]
    assert entry["id"] == job_id and entry["requestId"] == "erase-req-1"
    assert entry["keyId"] == await db.fetchval("SELECT min(id) FROM api_keys")
    assert entry["found"] == {segment: 1} and entry["identities"] == 2
    assert "ann" not in listing.text and "zoe" not in listing.text
    stored = await db.fetch("SELECT identity_sha256 FROM privacy_request_identities WHERE job_id = $1", job_id)
    assert {row[0] for row in stored} == {hashlib.sha256(v.encode()).hexdigest() for v in (ANN, "zoe@x.com")}
    dump = ""
    for table in ("privacy_requests", "privacy_request_identities", "privacy_erase_identities", "jobs"):
        dump += "\n".join(str(dict(row)) for row in await db.fetch(f"SELECT * FROM {table}"))
    assert "ann" not in dump and "zoe" not in dump
    # a later request can be checked against it
    held = await api(client, "GET", "/api/privacy/requests", params={"identity": " Ann@Example.com"})
    assert [entry["id"] for entry in held.result["requests"]] == [job_id]
    other = await api(client, "GET", "/api/privacy/requests", params={"identity": "bob@x.com"})
    assert other.result["requests"] == []


async def test_an_endpoint_cannot_erase_from_another_or_learn_what_it_holds(client, make_key):
    segment = await create_segment(client)
    await push_ok(client, segment, csv_body(["email"], [[ANN], ["bob@x.com"]]))
    other = await make_key("admin", endpoint="other")
    mine = await create_segment(client, "mine", headers=other)
    await push_ok(client, mine, csv_body(["email"], [["carl@x.com"]]), headers=other)

    result = await erase_and_wait(client, [ANN], headers=other)

    assert result["found"] == {} and result["totalErased"] == 0 and result["erasedFrom"] == {}
    assert column(await pulled(client, segment)) == {ANN, "bob@x.com"}
    own = await erase_and_wait(client, ["bob@x.com"])
    (await api(client, "GET", f"/api/privacy/erase/{own['id']}", other)).assert_failure(404, "erasure_not_found")
    listed = (await api(client, "GET", "/api/privacy/requests", other)).result["requests"]
    assert [entry["id"] for entry in listed] == [result["id"]]


async def test_privacy_routes_need_the_admin_scope(client, make_key):
    writer = await make_key("write")
    for method, path in (("POST", "/api/privacy/erase"), ("GET", "/api/privacy/requests"),
                         ("GET", "/api/privacy/suppressions"), ("DELETE", "/api/privacy/suppressions"),
                         ("GET", "/api/privacy/erase/1")):
        (await api(client, method, path, writer, json={"identities": [ANN]})).assert_failure(403)


async def test_malformed_erasures_are_refused_and_store_nothing(client, db):
    for payload, code in (({"identities": []}, "invalid_identities"), ({"identities": "ann"}, "invalid_identities"),
                          ({"identities": [1]}, "invalid_identities"),
                          ({"identities": ["a"] * 10_001}, "too_many_identities"),
                          ({"identities": [ANN], "suppress": "yes"}, "invalid_suppress"),
                          ({"identities": [ANN], "other": 1}, "unknown_field")):
        (await api(client, "POST", "/api/privacy/erase", json=payload)).assert_failure(400, code)
    (await api(client, "GET", "/api/privacy/erase/nope")).assert_failure(404, "erasure_not_found")
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
    assert await db.fetchval("SELECT count(*) FROM privacy_requests") == 0


async def test_erasing_from_many_segments_at_once(client):
    segments = [await create_segment(client, f"s{i}") for i in range(60)]  # more than one transaction's batch
    await asyncio.gather(*(push_ok(client, s, csv_body(["email"], [[ANN], [f"k{i}@x.com"]]))
                           for i, s in enumerate(segments)))
    result = await erase_and_wait(client, [ANN])
    assert result["found"] == {s: 1 for s in segments} and result["totalErased"] == 60
    assert column(await pulled(client, segments[-1])) == {"k59@x.com"}


async def test_a_csv_body_that_breaks_while_streaming_stores_nothing(client, db):
    broken = gzip.compress(b"email\nann@example.com\n")[:-6]  # cut inside the gzip trailer
    response = await client.post("/api/privacy/erase?suppress=true", data=broken,
                                 headers={**AUTH, "Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_gzip"
    for table in ("jobs", "privacy_requests", "privacy_erase_identities", "suppressions"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    unsupported = await client.post("/api/privacy/erase", data=b"x", headers={**AUTH, "Content-Type": "image/png"})
    assert unsupported.status == 415
