"""The suppression list (``"suppress": true`` on an erasure): later ADD and REPLACE pushes skip its identities
and count each such row invalid (reason ``suppressed``, stored with the other rejected rows)."""

from __future__ import annotations

import hashlib

from tests.conftest import AUTH
from tests.integration.manage_helpers import api
from tests.integration.privacy_helpers import column, erase_and_wait, pulled
from tests.integration.push_helpers import create_segment, csv_body, push_ok

ANN = "ann@example.com"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def stored_rejects(client, segment_id: str, upload_id: int) -> str:
    response = await client.get(f"/api/segments/{segment_id}/rejects", params={"upload": str(upload_id)},
                                headers=AUTH)
    assert response.status == 200, await response.text()
    return await response.text()


async def latest_upload(client, segment_id: str) -> dict:
    return (await api(client, "GET", f"/api/segments/{segment_id}/uploads")).result["uploads"][0]


async def test_an_add_skips_suppressed_identities_and_says_so(client):
    segment = await create_segment(client)
    await push_ok(client, segment, csv_body(["email", "name"], [[ANN, "Ann"], ["bob@x.com", "Bob"]]))
    result = await erase_and_wait(client, ["Ann@Example.com"], suppress=True)
    assert result["found"] == {segment: 1} and result["suppress"] is True

    added = await push_ok(client, segment, csv_body(["email", "name"], [[" ANN@example.com", "Ann again"],
                                                                        ["carl@x.com", "Carl"]]))
    assert (added["numReceived"], added["numInvalid"], added["numAdded"], added["numSuppressed"]) == ("2", "1", "1", "1")
    assert added["invalidSamples"] == [{"line": 2, "reason": "suppressed"}]
    assert column(await pulled(client, segment)) == {"bob@x.com", "carl@x.com"}
    upload = await latest_upload(client, segment)
    assert (upload["numInvalid"], upload["rejectsStored"]) == (1, 1)
    assert "suppressed" in await stored_rejects(client, segment, upload["id"])
    # a new segment of the endpoint is covered too; a push without suppressed rows says nothing of it
    fresh = await create_segment(client, "fresh")
    first = await push_ok(client, fresh, csv_body(["email"], [[ANN], ["dora@x.com"]]))
    assert (first["numInvalid"], first["numAdded"]) == ("1", "1")
    clean = await push_ok(client, fresh, csv_body(["email"], [["erin@x.com"]]))
    assert "numSuppressed" not in clean and clean["numInvalid"] == "0"


async def test_a_replace_skips_suppressed_identities_in_every_batch(client):
    segment = await create_segment(client)
    await push_ok(client, segment, csv_body(["email"], [["old@x.com"]]))
    await erase_and_wait(client, [ANN], suppress=True)
    # the first batch opens the session (through incoming); the second copies straight into staging
    first = await push_ok(client, segment, csv_body(["email"], [[ANN], ["bob@x.com"]]), "REPLACE", total=2, number=1)
    second = await push_ok(client, segment, csv_body(["email"], [["carl@x.com"], [ANN.upper()]]), "REPLACE",
                           total=2, number=2)
    assert (first["numInvalid"], first["numAdded"], first["numSuppressed"]) == ("1", "1", "1")
    assert (second["numInvalid"], second["numAdded"], second["numSuppressed"]) == ("1", "1", "1")
    assert second["invalidSamples"] == [{"line": 3, "reason": "suppressed"}]
    assert second["replaceCommitted"] is True and second["audienceSize"] == 2
    assert column(await pulled(client, segment)) == {"bob@x.com", "carl@x.com"}
    upload = await latest_upload(client, segment)
    assert "suppressed" in await stored_rejects(client, segment, upload["id"])


async def test_the_list_holds_hashes_and_an_identity_can_be_taken_off_it(client):
    segment = await create_segment(client)
    await erase_and_wait(client, ["Ann@Example.com"], suppress=True)
    listing = await api(client, "GET", "/api/privacy/suppressions")
    hashes = {entry["identitySha256"] for entry in listing.result["suppressions"]}
    assert hashes == {sha("Ann@Example.com"), sha(ANN)}
    assert "ann" not in listing.text.lower()

    removed = await api(client, "DELETE", "/api/privacy/suppressions", json={"identities": ["Ann@Example.com"]})
    assert removed.result == {"removed": 2}
    assert (await api(client, "GET", "/api/privacy/suppressions")).result["suppressions"] == []
    added = await push_ok(client, segment, csv_body(["email"], [[ANN]]))
    assert (added["numInvalid"], added["numAdded"]) == ("0", "1")


async def test_suppression_by_hash_and_paging(client):
    segment = await create_segment(client)
    await erase_and_wait(client, [sha("bob@x.com"), "a@x.com", "b@x.com"], suppress=True)
    added = await push_ok(client, segment, csv_body(["email"], [["bob@x.com"], ["carl@x.com"]]))
    assert (added["numInvalid"], added["numAdded"]) == ("1", "1")
    first = (await api(client, "GET", "/api/privacy/suppressions?limit=2")).result
    second = (await api(client, "GET", f"/api/privacy/suppressions?limit=2&cursor={first['nextCursor']}")).result
    assert len(first["suppressions"]) == 2 and len(second["suppressions"]) == 1 and second["nextCursor"] is None


async def test_another_endpoints_suppressions_change_nothing_here(client, make_key):
    other = await make_key("admin", endpoint="other")
    await erase_and_wait(client, [ANN], headers=other, suppress=True)
    segment = await create_segment(client)
    added = await push_ok(client, segment, csv_body(["email"], [[ANN]]))
    assert (added["numInvalid"], added["numAdded"]) == ("0", "1")
    assert (await api(client, "GET", "/api/privacy/suppressions")).result["suppressions"] == []
