"""Identities hashed at rest (``"identityHashing": "sha256"``): hashed on ingest, pre-hashed values kept,
exports return hashes, an erasure given plaintext hashes it first, the setting fixed once there is data."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg

from gateway.db.queries import QUERIES
from tests.conftest import AUTH
from tests.integration.manage_helpers import api
from tests.integration.privacy_helpers import column, erase_and_wait, pulled
from tests.integration.pull_helpers import export_via_job
from tests.integration.push_helpers import create_segment, csv_body, push_ok, streaming_push

PRE_HASHED = "AB" * 32  # 64 hex characters: kept as sent


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def hashing_segment(client, name: str = "hashed") -> str:
    response = await client.post("/v1/segments", json={"name": name, "identityHashing": "sha256"}, headers=AUTH)
    assert response.status == 200, await response.text()
    return (await response.json())["result"]["segmentId"]


async def test_identities_are_hashed_on_ingest_and_exported_as_hashes(client):
    segment = await hashing_segment(client)
    assert (await api(client, "GET", f"/v1/segments/{segment}")).result["identityHashing"] == "sha256"
    assert (await api(client, "GET", f"/api/segments/{segment}")).result["identityHashing"] == "sha256"
    await push_ok(client, segment, csv_body(["Email", "name"], [[" Ann@Example.com", "Ann"], [PRE_HASHED, "Pre"]]))
    await push_ok(client, segment, csv_body(["Email", "name"], [["bob@x.com", "Bob"]]), "REPLACE", total=2, number=1)
    await push_ok(client, segment, csv_body(["Email", "name"], [["carl@x.com", "Carl"], [PRE_HASHED, "Pre"]]),
                  "REPLACE", total=2, number=2)
    expected = {sha("bob@x.com"), sha("carl@x.com"), PRE_HASHED.lower()}  # an email column is lower-cased first
    assert column(await pulled(client, segment)) == expected
    _, header, rows = await export_via_job(client, segment)
    assert header == ["Email", "name"] and column(rows) == expected
    added = await push_ok(client, segment, csv_body(["Email"], [["ann@example.com"]]))
    assert column(await pulled(client, segment)) == expected | {sha("ann@example.com")}
    assert added["numAdded"] == "1"


async def test_a_pre_hashed_value_is_kept_as_sent_outside_email_columns(client):
    segment = await hashing_segment(client)
    await push_ok(client, segment, csv_body(["customer"], [[PRE_HASHED], ["Id-7"]]))
    assert column(await pulled(client, segment)) == {PRE_HASHED, sha("Id-7")}


async def test_an_erasure_given_plaintext_finds_the_hash(client):
    segment = await hashing_segment(client)
    plain = await create_segment(client, "plain")
    await push_ok(client, segment, csv_body(["email"], [["ann@example.com"], ["bob@x.com"]]))
    await push_ok(client, plain, csv_body(["email"], [["ann@example.com"], ["bob@x.com"]]))
    result = await erase_and_wait(client, ["Ann@Example.com"])
    assert result["found"] == {segment: 1, plain: 1}
    assert column(await pulled(client, segment)) == {sha("bob@x.com")}
    assert column(await pulled(client, plain)) == {"bob@x.com"}


async def test_the_setting_changes_only_while_the_segment_holds_no_data(client, db):
    segment = await create_segment(client)
    changed = await api(client, "PATCH", f"/api/segments/{segment}", json={"identityHashing": "sha256"})
    assert changed.result["identityHashing"] == "sha256"
    await push_ok(client, segment, csv_body(["email"], [["ann@example.com"]]))
    assert column(await pulled(client, segment)) == {sha("ann@example.com")}

    refused = await api(client, "PATCH", f"/api/segments/{segment}", json={"identityHashing": None, "name": "x"})
    refused.assert_failure(409, "segment_not_empty")
    row = await db.fetchrow("SELECT identity_hashing, name FROM segments WHERE id = $1", int(segment))
    assert tuple(row) == ("sha256", "pushed")  # nothing of the request was applied
    same = await api(client, "PATCH", f"/api/segments/{segment}", json={"identityHashing": "sha256"})
    assert same.result["identityHashing"] == "sha256"

    # staged REPLACE batches count as data too
    staged = await create_segment(client, "staged")
    await push_ok(client, staged, csv_body(["email"], [["bob@x.com"]]), "REPLACE", total=2, number=1)
    (await api(client, "PATCH", f"/api/segments/{staged}", json={"identityHashing": "sha256"})).assert_failure(
        409, "segment_not_empty")


async def test_an_unknown_hashing_is_refused(client, db):
    response = await client.post("/v1/segments", json={"name": "x", "identityHashing": "md5"}, headers=AUTH)
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_identity_hashing"
    segment = await create_segment(client)
    (await api(client, "PATCH", f"/api/segments/{segment}", json={"identityHashing": 1})).assert_failure(
        400, "invalid_identity_hashing")
    assert await db.fetchval("SELECT count(*) FROM segments WHERE identity_hashing IS NOT NULL") == 0


async def test_a_push_streaming_while_the_setting_changes_applies_nothing(streaming_client, db):
    segment = await create_segment(streaming_client)
    async with streaming_push(streaming_client, db, segment, b"email\nann@example.com\n", b"bob@x.com\n") as slow:
        changed = await api(streaming_client, "PATCH", f"/api/segments/{segment}", json={"identityHashing": "sha256"})
        assert changed.result["identityHashing"] == "sha256"
    (await slow).assert_failure(409, "identity_hashing_changed")
    assert await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment)) == 0
    await push_ok(streaming_client, segment, csv_body(["email"], [["ann@example.com"]]))
    assert column(await pulled(streaming_client, segment)) == {sha("ann@example.com")}


async def test_replace_batches_of_a_hashing_segment_stage_without_the_segments_lock(client, db, database_url):
    """As into a plain segment: a batch of an open session whose header adds nothing copies straight into
    staging, without waiting for the segment's apply lock (held here by another transaction)."""
    segment = await hashing_segment(client)
    await push_ok(client, segment, csv_body(["email"], [["ann@example.com"]]), "REPLACE", total=3, number=1)
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(QUERIES["segment_apply_exclusive"], int(segment))
            async with asyncio.timeout(10):
                staged = await push_ok(client, segment, csv_body(["email"], [["bob@x.com"]]), "REPLACE",
                                       total=3, number=2)
        assert staged["replaceCommitted"] is False
    finally:
        await holder.close()
    await push_ok(client, segment, csv_body(["email"], [["carl@x.com"]]), "REPLACE", total=3, number=3)
    assert column(await pulled(client, segment)) == {sha(v) for v in ("ann@example.com", "bob@x.com", "carl@x.com")}
