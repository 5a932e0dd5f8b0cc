"""Segment jobs (gateway.segmentation.segment_jobs, gateway.segmentation.evaluate, gateway.jobs.segment_jobs,
``/api/segment/jobs``): definitions evaluated into their Queries audiences by the job queue."""

from __future__ import annotations

from gateway.db.queries import QUERIES
from gateway.segmentation import segment_jobs


async def test_create_job_queues_a_segment_job_and_its_row(db):
    endpoint_id = await db.fetchval(QUERIES["endpoint_create"], "default")
    listened: list[str] = []
    await db.add_listener("audience_gateway_jobs", lambda *args: listened.append(args[-1]))
    some = await segment_jobs.create_job(db, endpoint_id, [3, 1], source="api")
    every = await segment_jobs.create_job(db, endpoint_id, None, source="scheduler", schedule_id=7)
    rows = {row["job_id"]: row for row in await db.fetch(
        "SELECT j.kind, j.segment_id, j.status, s.* FROM jobs j JOIN segment_jobs s ON s.job_id = j.id")}
    assert rows[some]["kind"] == "SegmentJob" and rows[some]["segment_id"] is None
    assert rows[some]["status"] == "waiting"
    assert (rows[some]["all_definitions"], rows[some]["definition_ids"], rows[some]["source"]) == (False, [3, 1], "api")
    assert (rows[every]["all_definitions"], rows[every]["definition_ids"]) == (True, [])
    assert (rows[every]["source"], rows[every]["schedule_id"]) == ("scheduler", 7)
    job = segment_jobs.describe(await segment_jobs.get_job(db, endpoint_id, every))
    assert job["status"] == "QUEUED" and job["segments"] == [{"segmentId": "*"}]
    assert job["properties"] == {"scheduleId": "7"}
    for _ in range(50):
        if len(listened) == 2:
            break
        await db.execute("SELECT 1")  # notifications are delivered between statements
    assert sorted(listened) == sorted([str(some), str(every)])


import asyncio
import dataclasses

import asyncpg
import pytest

from gateway.jobs.queue import JobWorkers
from gateway.jobs.segment_jobs import SEGMENT_JOB
from tests.integration.test_job_queue import die

from tests.integration.segment_job_helpers import (build_tables, define, endpoint_of, job, members, post_job, run,
                                                   source_with, use_language, wait_for)
from tests.integration.manage_helpers import segment_row
from tests.helpers import eventually
from tests.integration.manage_helpers import api
from tests.integration.push_helpers import app_client, csv_body, push_ok
from tests.integration.pull_helpers import blocked_backends, sync_rows, wait_for_blocked_backends


@pytest.fixture(autouse=True)
def language(monkeypatch):
    use_language(monkeypatch)


async def two_sources(client, db) -> tuple[int, int]:
    """A: email, Country, Name; B: email, country, Age, name (same names in other cases)."""
    a = await source_with(client, db, "A", ["email", "Country", "Name"], [
        ["a1@x", "US", "Ann"], ["a2@x", "", "Bob"], ["a3@x", "FR", ""]])
    b = await source_with(client, db, "B", ["email", "country", "Age", "name"], [
        ["a2@x", "US", "30", "Robert"], ["a3@x", "US", "41", "Cid"], ["b1@x", "US", "", "Dee"],
        ["b2@x", "DE", "22", "Eve"]])
    return a, b


async def test_multi_source_definition_first_source_wins(client, db):
    a, b = await two_sources(client, db)
    endpoint_id = await endpoint_of(db, a)
    definition, audience = await define(db, endpoint_id, "us", 'Country = "US"', [a, b])
    answer = await run(client, definition)
    # merged attributes: email, Country, Name, Age; each from the first source with it non-empty
    assert await members(db, audience) == {
        "a1@x": ["a1@x", "US", "Ann", ""],
        "a2@x": ["a2@x", "US", "Bob", "30"],     # Country from B: A's is empty
        "b1@x": ["b1@x", "US", "Dee", ""],
    }  # a3: A says FR (first source wins over B's US); b2: DE
    row = await segment_row(db, audience)
    assert (row["identity_attribute"], row["attributes"], row["member_count"]) == (
        "email", ["email", "Country", "Name", "Age"], 3)
    metrics = answer["metrics"]
    assert metrics["totalProfiles"] == 5
    assert metrics["segmentedProfileCounter"] == {str(definition): 3}
    assert metrics["segmentedProfileByStatusCounter"] == {str(definition): {"realized": 3, "existing": 0, "exited": 0}}
    assert set(metrics["segmentTimeInMs"]) == {str(definition)}
    total = metrics["totalTime"]
    assert total["endTimeInMs"] - total["startTimeInMs"] == total["totalTimeInMs"] >= 0
    assert answer["errors"] == [] and answer["source"] == "api"
    assert answer["segments"] == [{"segmentId": str(definition)}]
    assert answer["creationTime"] <= answer["updateTime"]
    assert await build_tables(db) == []
    # the other order: B first
    definition, audience = await define(db, endpoint_id, "us-b-first", 'Country = "US"', [b, a])
    await run(client, definition)
    assert await members(db, audience) == {
        "a2@x": ["a2@x", "US", "30", "Robert"], "a3@x": ["a3@x", "US", "41", "Cid"],
        "b1@x": ["b1@x", "US", "", "Dee"], "a1@x": ["a1@x", "US", "", "Ann"]}


async def test_realized_existing_exited_across_three_runs(client, db):
    source = await source_with(client, db, "people", ["email", "Country"],
                               [["u1", "US"], ["u2", "US"], ["u3", "FR"]])
    definition, audience = await define(db, await endpoint_of(db, source), "us", 'Country = "US"', [source])

    async def counts() -> dict[str, int]:
        answer = await run(client, definition)
        assert answer["metrics"]["segmentedProfileCounter"] == {str(definition): len(await members(db, audience))}
        return answer["metrics"]["segmentedProfileByStatusCounter"][str(definition)]

    assert await counts() == {"realized": 2, "existing": 0, "exited": 0}
    assert set(await members(db, audience)) == {"u1", "u2"}
    await push_ok(client, str(source), csv_body(["email", "Country"], [["u3", "US"], ["u4", "US"]]))
    await push_ok(client, str(source), csv_body(["email"], [["u1"]]), "REMOVE")
    assert await counts() == {"realized": 2, "existing": 1, "exited": 1}
    assert set(await members(db, audience)) == {"u2", "u3", "u4"}
    await push_ok(client, str(source), csv_body(["email", "Country"], [["u2", "FR"]]))
    assert await counts() == {"realized": 0, "existing": 2, "exited": 1}
    assert await members(db, audience) == {"u3": ["u3", "US"], "u4": ["u4", "US"]}
    assert (await segment_row(db, audience))["member_count"] == 2


async def test_swap_is_atomic_under_concurrent_reads(client, db, database_url):
    """Readers of the audience (GET /v1/segments/{id}/data) see the previous members or the new ones, whole,
    never a mix: while the job waits to swap (held by a reader's share lock on the segment's row), reads go
    on and see the previous audience; then the new one."""
    old = [[f"old{i:04d}", "US"] for i in range(300)]
    new = [[f"new{i:04d}", "US"] for i in range(300)]
    source = await source_with(client, db, "people", ["email", "Country"], old)
    definition, audience = await define(db, await endpoint_of(db, source), "us", 'Country = "US"', [source])
    await run(client, definition)
    await push_ok(client, str(source), csv_body(["email", "Country"], new), "REPLACE", total=1, number=1)
    seen: list[frozenset[str]] = []
    changed = asyncio.Condition()
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            _header, rows = await sync_rows(client, audience)
            async with changed:
                seen.append(frozenset(row[0] for row in rows))
                changed.notify_all()

    async def reads(count: int) -> None:
        async with changed:
            await asyncio.wait_for(changed.wait_for(lambda: len(seen) >= count), 20)

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    try:
        holder = await asyncpg.connect(database_url)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM segments WHERE id = $1 FOR SHARE", audience)
                created = await post_job(client, {"segments": [{"segmentId": str(definition)}]})
                await wait_for_blocked_backends(db, 1)  # the job's swap waits for the share lock
                before = len(seen)
                await reads(before + 10)
                assert set(seen[before:]) == {frozenset(r[0] for r in old)}
        finally:
            await holder.close()
        await wait_for(client, created["id"], "SUCCEEDED")
        after = len(seen)
        await reads(after + 3)
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert set(seen) <= {frozenset(r[0] for r in old), frozenset(r[0] for r in new)}
    assert seen[-1] == frozenset(r[0] for r in new)


async def test_cancel_leaves_the_previous_audience(aiohttp_client, settings, db, database_url):
    """A job canceled after it built its audience, while its swap waits: it stops at once (its statement is
    canceled: nothing waits any more), the audience keeps its previous members, and the next job drops what
    the canceled one built."""
    client = await app_client(aiohttp_client, settings, job_lease=1.0)
    source = await source_with(client, db, "people", ["email", "Country"], [["u1", "US"], ["u2", "US"]])
    definition, audience = await define(db, await endpoint_of(db, source), "us", 'Country = "US"', [source])
    await run(client, definition)
    previous = await members(db, audience)
    await push_ok(client, str(source), csv_body(["email", "Country"], [["u3", "US"]]))
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(QUERIES["segment_apply_exclusive"], audience)
            created = await post_job(client, {"segments": [{"segmentId": str(definition)}]})
            await wait_for_blocked_backends(db, 1)  # built; its swap waits for the audience's lock
            assert len(await build_tables(db)) == 1
            canceled = (await api(client, "DELETE", f"/api/segment/jobs/{created['id']}")).result
            assert canceled["status"] == "CANCELLED"
            await eventually(lambda: no_blocked_backends(db), "the canceled job to stop waiting")
    finally:
        await holder.close()
    assert await members(db, audience) == previous
    assert (await job(client, created["id"]))["status"] == "CANCELLED"
    again = await api(client, "DELETE", f"/api/segment/jobs/{created['id']}")
    assert again.result["status"] == "CANCELLED"  # canceling an ended job changes nothing
    await run(client, definition)
    assert set(await members(db, audience)) == {"u1", "u2", "u3"}
    assert await build_tables(db) == []


async def no_blocked_backends(db) -> bool:
    return await blocked_backends(db) == 0


@pytest.fixture
async def workers(database_url, settings):
    """``make()`` starts one worker of segment jobs only, with a 1 s lease, on a pool of its own."""
    started: list[tuple[JobWorkers, asyncpg.Pool]] = []

    async def make() -> JobWorkers:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        worker = JobWorkers(pool, database_url, dataclasses.replace(settings, export_workers=1, job_lease=1.0),
                            kinds=[SEGMENT_JOB], poll_seconds=0.2)
        await worker.start()
        started.append((worker, pool))
        return worker

    yield make
    for worker, pool in started:
        await worker.stop()
        await pool.close()


async def test_a_job_whose_worker_died_is_taken_over(aiohttp_client, settings, db, database_url, workers):
    """The first worker dies while its job waits to swap (its build is left in staging); once its lease
    runs out a second worker takes the job over, drops the first attempt's build, and completes it."""
    client = await app_client(aiohttp_client, settings)
    source = await source_with(client, db, "people", ["email", "Country"], [["u1", "US"], ["u2", "FR"]])
    endpoint_id = await endpoint_of(db, source)
    definition, audience = await define(db, endpoint_id, "us", 'Country = "US"', [source])
    await client.close()  # its workers stop: only this test's run the job
    job_id = await segment_jobs.create_job(db, endpoint_id, [definition], source="api")
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(QUERIES["segment_apply_exclusive"], audience)
            first = await workers()
            await wait_for_blocked_backends(db, 1)
            assert await build_tables(db) == [f"segjob_{job_id}_1_{definition}"]
            await die(first)
            second = await workers()

            async def second_waits() -> bool:
                return await build_tables(db) == [f"segjob_{job_id}_2_{definition}"] and await blocked_backends(db) == 1

            await eventually(second_waits, "the second attempt to build and wait for the swap")
            row = await db.fetchrow("SELECT status, attempts, lease_owner FROM jobs WHERE id = $1", job_id)
            assert dict(row) == {"status": "running", "attempts": 2, "lease_owner": second.owner}
            assert await members(db, audience) == {}
    finally:
        await holder.close()

    async def complete() -> bool:
        return await db.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "complete"

    await eventually(complete, "the second worker to complete the job")
    assert await members(db, audience) == {"u1": ["u1", "US"]}
    assert await build_tables(db) == []
    answer = segment_jobs.describe(await segment_jobs.get_job(db, endpoint_id, job_id))
    assert answer["status"] == "SUCCEEDED"
    assert answer["metrics"]["segmentedProfileByStatusCounter"] == {
        str(definition): {"realized": 1, "existing": 0, "exited": 0}}
