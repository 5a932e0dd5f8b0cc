"""Segmentation and privacy together: an erasure that runs while a segment job builds, identity hashing
across a definition's sources."""

from __future__ import annotations

import hashlib

import asyncpg

from gateway.db.queries import QUERIES
from gateway.segmentation import segment_jobs
from tests.conftest import AUTH
from tests.helpers import eventually
from tests.integration.definition_helpers import DEFINITIONS, counts, pql
from tests.integration.definition_helpers import define as define_api
from tests.integration.manage_helpers import api
from tests.integration.privacy_helpers import erase, erase_and_wait, wait_erased
from tests.integration.pull_helpers import wait_for_blocked_backends
from tests.integration.push_helpers import app_client, csv_body, push_ok
from tests.integration.segment_job_helpers import define, endpoint_of, members, post_job, run, source_with, wait_for
from tests.integration.test_segment_jobs import workers  # noqa: F401  (fixture)


async def test_an_erasure_between_build_and_swap_is_not_undone(aiohttp_client, settings, db, database_url,
                                                                workers):  # noqa: F811
    """A segment job builds its audience from a snapshot that holds ann (in the previous audience) and bob
    (pushed since: only in the build); an erasure of both then completes; the swap must not bring either
    back. The build's snapshot share-locks the source, so the erasure waits for the build to end: the job
    is held after that build and before its swap by the build of a second definition (the test locks that
    build's table, made beforehand: the build drops it first), whose source was never pushed to, so the
    erasure does not go over it."""
    client = await app_client(aiohttp_client, settings)
    header = ["email", "Country"]
    source = await source_with(client, db, "people", header, [["ann@x", "US"], ["cid@x", "US"]])
    endpoint_id = await endpoint_of(db, source)
    definition, audience = await define(db, endpoint_id, "us", 'Country = "US"', [source])
    never = await source_with(client, db, "never", [], [])
    holding, _holding_audience = await define(db, endpoint_id, "held", f'inSegment("{never}")', [never])
    await run(client, definition)
    await push_ok(client, str(source), csv_body(header, [["bob@x", "US"]]))
    await client.close()  # its workers stop: the job is run by this test's worker
    job_id = await segment_jobs.create_job(db, endpoint_id, [definition, holding], source="api")
    build = f'staging."segjob_{job_id}_1_{holding}"'
    await db.execute(f"CREATE TABLE {build} (identity text)")
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(f"LOCK TABLE {build} IN ACCESS EXCLUSIVE MODE")
            await workers()
            await wait_for_blocked_backends(db, 1)  # the first definition built, the second waits to drop the table
            eraser = await app_client(aiohttp_client, settings)
            erased = await erase_and_wait(eraser, ["ann@x", "bob@x"])
            assert erased["found"] == {str(source): 2, str(audience): 1}
            assert set(await members(db, audience)) == {"cid@x"}
    finally:
        await holder.close()

    async def complete() -> bool:
        return await db.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "complete"

    await eventually(complete, "the segment job to complete")
    assert set(await members(db, audience)) == {"cid@x"}
    answer = segment_jobs.describe(await segment_jobs.get_job(db, endpoint_id, job_id))
    assert answer["status"] == "SUCCEEDED" and answer["errors"] == []
    assert answer["metrics"]["segmentedProfileByStatusCounter"] == {
        str(definition): {"realized": 0, "existing": 1, "exited": 0},
        str(holding): {"realized": 0, "existing": 0, "exited": 0}}


async def test_a_build_and_an_erasure_lock_segments_in_the_same_order(client, db, database_url):
    """A build share-locks its sources and the segments inSegment reads; an erasure locks every segment of
    the endpoint, definitions' audiences last. The build reads audience ``us`` (inSegment, the lower id) and
    source ``people`` (the higher): in id order it would hold ``us`` while it waits for ``people``, which the
    erasure holds while it waits for ``us`` (a deadlock: one of them fails). In the erasure's order the build
    waits for ``people`` holding nothing; the erasure completes, and the build starts again after it (its
    lock could not serialize) and succeeds. Held here: the test holds ``us``'s apply lock until both wait."""
    header = ["email", "Country"]
    first = await source_with(client, db, "first", header, [["ann@x", "US"]])
    endpoint_id = await endpoint_of(db, first)
    us, us_audience = await define(db, endpoint_id, "us", 'Country = "US"', [first])
    await run(client, us)
    people = await source_with(client, db, "people", header, [["ann@x", "US"], ["bob@x", "FR"]])
    assert us_audience < people
    both, both_audience = await define(db, endpoint_id, "both", f'inSegment("{us_audience}") or Country = "FR"',
                                       [people])
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(QUERIES["segment_apply_exclusive"], us_audience)
            erasing = await erase(client, ["ann@x"])
            await wait_for_blocked_backends(db, 1)  # the erasure: the sources erased, it waits for us
            created = await post_job(client, {"segments": [{"segmentId": str(both)}]})
            await wait_for_blocked_backends(db, 2)  # the build waits for people's row
    finally:
        await holder.close()
    erased = await wait_erased(client, erasing["id"])
    assert erased["found"] == {str(first): 1, str(people): 1, str(us_audience): 1}
    answer = await wait_for(client, created["id"], "SUCCEEDED")
    assert answer["errors"] == []
    assert await members(db, both_audience) == {"bob@x": ["bob@x", "FR"]}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def hashing_list(client, name: str, body: str | None) -> int:
    """A Contact List storing SHA-256 identities, with the members of ``body``."""
    response = await client.post("/v1/segments", json={"name": name, "identityHashing": "sha256"}, headers=AUTH)
    segment_id = int((await response.json())["result"]["segmentId"])
    if body is not None:
        await push_ok(client, str(segment_id), body)
    return segment_id


async def plain_list(client, name: str, body: str | None) -> int:
    response = await client.post("/v1/segments", json={"name": name}, headers=AUTH)
    segment_id = int((await response.json())["result"]["segmentId"])
    if body is not None:
        await push_ok(client, str(segment_id), body)
    return segment_id


async def test_sources_mixing_hashed_and_plain_identities_are_refused(client, db):
    """A definition whose sources (or inSegment segments) store identities otherwise than each other: 400
    mixed_identity_hashing on create, PATCH and validate; nothing is stored."""
    hashed = await hashing_list(client, "hashed", "email,Country\nann@x,US\n")
    plain = await plain_list(client, "plain", "email,Country\nann@x,US\n")
    other = await plain_list(client, "other plain", "email,Country\nbob@x,US\n")
    before = await counts(db)
    for sources, expression in (([hashed, plain], 'Country = "US"'), ([plain], f'inSegment("{hashed}")'),
                                ("*", 'Country = "US"')):
        body = {"name": "mixed", "expression": pql(expression), "sources": sources}
        refused = await api(client, "POST", DEFINITIONS, json=body)
        refused.assert_failure(400, "mixed_identity_hashing")
        validated = (await api(client, "POST", DEFINITIONS + "/validate",
                               json={"expression": pql(expression), "sources": sources})).result
        assert not validated["valid"] and validated["errors"][0]["code"] == "mixed_identity_hashing", validated
    assert await counts(db) == before
    made = await define_api(client, "plain only", 'Country = "US"', [plain, other])
    changed = await api(client, "PATCH", f"{DEFINITIONS}/{made['id']}", json={"sources": [str(plain), str(hashed)]})
    changed.assert_failure(400, "mixed_identity_hashing")


async def test_a_definition_that_became_mixed_is_an_error_of_the_job(client, db):
    """Sources alike when defined; one (still empty) then hashes its identities: the job records
    mixed_identity_hashing for the definition, and its audience keeps its members."""
    first = await plain_list(client, "first", "email,Country\nann@x,US\n")
    second = await plain_list(client, "second", None)
    made = await define_api(client, "us", 'Country = "US"', [first, second])
    await run(client, made["id"])
    audience = int(made["audienceSegmentId"])
    assert set(await members(db, audience)) == {"ann@x"}
    await api(client, "PATCH", f"/api/segments/{second}", json={"identityHashing": "sha256"})
    job = await run(client, made["id"], wanted="FAILED")
    assert [error["code"] for error in job["errors"]] == ["mixed_identity_hashing"], job
    assert set(await members(db, audience)) == {"ann@x"}


async def test_the_audience_of_hashing_sources_hashes_too(client, db):
    """Sources hashing their identities: the definition's audience says identityHashing sha256, a
    an erasure given a plaintext finds its hash there."""
    first = await hashing_list(client, "first", "email,Country\nann@x,US\nbob@x,FR\n")
    second = await hashing_list(client, "second", f"email,Country\n{sha('cid@x')},US\n")
    made = await define_api(client, "us", 'Country = "US"', [first, second])
    audience = int(made["audienceSegmentId"])
    assert (await api(client, "GET", f"/api/segments/{audience}")).result["identityHashing"] == "sha256"
    await run(client, made["id"])
    assert set(await members(db, audience)) == {sha("ann@x"), sha("cid@x")}
    assert (await api(client, "GET", f"/v1/segments/{audience}")).result["identityHashing"] == "sha256"
    erased = await erase_and_wait(client, ["ann@x"])
    assert erased["found"] == {str(first): 1, str(audience): 1}
    assert set(await members(db, audience)) == {sha("cid@x")}
