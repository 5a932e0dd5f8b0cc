"""Segmentation and privacy together: an erasure that runs while a segment job builds, identity hashing
across a definition's sources."""

from __future__ import annotations

import asyncpg

from gateway.segmentation import segment_jobs
from tests.helpers import eventually
from tests.integration.privacy_helpers import erase_and_wait
from tests.integration.pull_helpers import wait_for_blocked_backends
from tests.integration.push_helpers import app_client, csv_body, push_ok
from tests.integration.segment_job_helpers import define, endpoint_of, members, run, source_with
from tests.integration.test_segment_jobs import workers  # noqa: F401  (fixture)


async def test_an_erasure_between_build_and_swap_is_not_undone(aiohttp_client, settings, db, database_url,
                                                                workers):  # noqa: F811
    """A segment job builds its audience from a snapshot that holds ann (in the previous audience) and bob
    (pushed since: only in the build); an erasure of both then completes; the swap must not bring either
    back. The build is held after its snapshot by a lock on its own build table (made beforehand by the
    test: the build drops it first), which the erasure does not need."""
    client = await app_client(aiohttp_client, settings)
    header = ["email", "Country"]
    source = await source_with(client, db, "people", header, [["ann@x", "US"], ["cid@x", "US"]])
    endpoint_id = await endpoint_of(db, source)
    definition, audience = await define(db, endpoint_id, "us", 'Country = "US"', [source])
    await run(client, definition)
    await push_ok(client, str(source), csv_body(header, [["bob@x", "US"]]))
    await client.close()  # its workers stop: the job is run by this test's worker
    job_id = await segment_jobs.create_job(db, endpoint_id, [definition], source="api")
    build = f'staging."segjob_{job_id}_1_{definition}"'
    await db.execute(f"CREATE TABLE {build} (identity text)")
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(f"LOCK TABLE {build} IN ACCESS EXCLUSIVE MODE")
            await workers()
            await wait_for_blocked_backends(db, 1)  # the build, its snapshot taken, waits to drop the table
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
        str(definition): {"realized": 0, "existing": 1, "exited": 0}}
