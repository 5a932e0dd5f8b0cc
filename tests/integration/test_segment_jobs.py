"""Segment jobs (gateway.segmentation.segment_jobs, gateway.segmentation.evaluate, gateway.jobs.segment_jobs,
``/api/segment/jobs``): definitions evaluated into their Queries audiences by the job queue."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import asyncpg
import pytest

from bench import data as bench_data
from gateway.db.queries import QUERIES
from gateway.jobs.queue import JobWorkers
from gateway.jobs.segment_jobs import SEGMENT_JOB
from gateway.segmentation import segment_jobs
from tests.helpers import eventually
from tests.integration.manage_helpers import api, segment_row
from tests.integration.pull_helpers import (BusyWorker, blocked_backends, export_via_job, sync_rows, table_lock,
                                           wait_for_blocked_backends)
from tests.integration.push_helpers import app_client, csv_body, push, push_ok
from tests.integration.segment_job_helpers import (build_tables, define, endpoint_of, job, members, post_job, run,
                                                   source_with, wait_for, waiting_for_table)
from tests.integration.test_job_queue import die


async def two_sources(client, db) -> tuple[int, int]:
    """A: email, Country, Name; B: email, country, Age, name (same names in other cases)."""
    a = await source_with(client, db, "A", ["email", "Country", "Name"], [
        ["a1@x", "US", "Ann"], ["a2@x", "", "Bob"], ["a3@x", "FR", ""]])
    b = await source_with(client, db, "B", ["email", "country", "Age", "name"], [
        ["a2@x", "US", "30", "Robert"], ["a3@x", "US", "41", "Cid"], ["b1@x", "US", "", "Dee"],
        ["b2@x", "DE", "22", "Eve"]])
    return a, b


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
    shown = segment_jobs.describe(await segment_jobs.get_job(db, endpoint_id, every))
    assert shown["status"] == "QUEUED" and shown["segments"] == [{"segmentId": "*"}]
    assert shown["properties"] == {"scheduleId": "7"}

    async def woken() -> bool:
        await db.execute("SELECT 1")  # notifications are delivered between statements
        return len(listened) == 2

    await eventually(woken, "both jobs to wake the workers")
    assert sorted(listened) == sorted([str(some), str(every)])


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
        assert answer["metrics"]["totalProfiles"] == len(await members(db, source))
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


async def test_the_audience_on_every_v1_route_after_a_run(client, db):
    a, b = await two_sources(client, db)
    definition, audience = await define(db, await endpoint_of(db, a), "us", 'Country = "US"', [a, b])
    since = (await api(client, "GET", "/api/segments")).result["nextUpdatedSince"]
    await run(client, definition)
    changed = (await api(client, "GET", "/api/segments", params={"updatedSince": since})).result["segments"]
    assert [(s["id"], s["memberCount"]) for s in changed] == [(audience, 3)]  # the change feed saw it move
    listed = (await api(client, "GET", "/v1/segments")).result["list"]
    assert {"id": audience, "name": "us", "type": "Queries"}.items() <= next(
        s for s in listed if int(s["id"]) == audience).items()
    details = (await api(client, "GET", f"/v1/segments/{audience}")).result
    assert (details["type"], details["identityAttribute"], details["size"]) == ("Queries", "email", 3)
    assert [x["name"] for x in details["segmentAttributes"]] == ["email", "Country", "Name", "Age"]
    expected = [["a1@x", "US", "Ann", ""], ["a2@x", "US", "Bob", "30"], ["b1@x", "US", "Dee", ""]]
    assert await sync_rows(client, audience) == (["email", "Country", "Name", "Age"], expected)
    _job, header, rows = await export_via_job(client, audience)
    assert (header, rows) == (["email", "Country", "Name", "Age"], expected)


async def test_a_definition_that_cannot_be_evaluated_is_an_error_of_the_job(client, db):
    """Its audience keeps its members; the job goes on with the others and succeeds; a job none of whose
    definitions could be evaluated fails."""
    source = await source_with(client, db, "people", ["email", "Country"], [["u1", "US"], ["u2", "FR"]])
    endpoint_id = await endpoint_of(db, source)
    good, good_audience = await define(db, endpoint_id, "us", 'Country = "US"', [source])
    bad, bad_audience = await define(db, endpoint_id, "bad", 'Country = "FR"', [source])
    await run(client, good, bad)
    assert set(await members(db, bad_audience)) == {"u2"}
    await db.execute("UPDATE segment_definitions SET expression = 'Missing = \"x\"' WHERE id = $1", bad)
    await push_ok(client, str(source), csv_body(["email", "Country"], [["u3", "US"], ["u4", "FR"]]))
    answer = await run(client, good, bad)
    assert set(await members(db, good_audience)) == {"u1", "u3"}
    assert set(await members(db, bad_audience)) == {"u2"}  # as before
    assert [(e["code"], e["segmentId"]) for e in answer["errors"]] == [("invalid_expression", str(bad))]
    assert set(answer["metrics"]["segmentedProfileCounter"]) == {str(good)}
    failed = await run(client, bad, wanted="FAILED")
    assert [e["code"] for e in failed["errors"]] == ["invalid_expression"]
    # a source that is no longer valid, and a definition deleted after the job was created
    await db.execute("UPDATE segments SET status = 'inactive' WHERE id = $1", source)
    await db.execute("UPDATE segment_definitions SET expression = 'Country = \"FR\"' WHERE id = $1", bad)
    failed = await run(client, bad, wanted="FAILED")
    assert [e["code"] for e in failed["errors"]] == ["invalid_sources"]
    await db.execute("UPDATE segments SET status = 'active' WHERE id = $1", source)
    await db.execute("UPDATE segment_definitions SET deleted_at = now() WHERE id = $1", bad)
    job_id = await segment_jobs.create_job(db, endpoint_id, [good, bad], source="api")  # as a schedule would
    answer = await wait_for(client, str(job_id), "SUCCEEDED")
    assert [(e["code"], e["segmentId"]) for e in answer["errors"]] == [("definition_not_found", str(bad))]


async def test_all_definitions_and_listing(client, db):
    source = await source_with(client, db, "people", ["email", "Country"], [["u1", "US"], ["u2", "FR"]])
    endpoint_id = await endpoint_of(db, source)
    us, us_audience = await define(db, endpoint_id, "us", 'Country = "US"', [source])
    fr, fr_audience = await define(db, endpoint_id, "fr", 'Country = "FR"', None)  # sources "*"
    off, off_audience = await define(db, endpoint_id, "off", 'Country = "US"', None, batch=False)
    created = await post_job(client, [{"segmentId": "*"}])  # the bare-array form
    assert created["segments"] == [{"segmentId": "*"}] and created["status"] in ("QUEUED", "PROCESSING",
                                                                                  "SUCCEEDED")
    answer = await wait_for(client, created["id"], "SUCCEEDED")
    assert set(answer["metrics"]["segmentedProfileCounter"]) == {str(us), str(fr)}
    assert (set(await members(db, us_audience)), set(await members(db, fr_audience))) == ({"u1"}, {"u2"})
    assert await members(db, off_audience) == {}
    ids = [created["id"]] + [(await run(client, us))["id"] for _ in range(4)]
    page = (await api(client, "GET", "/api/segment/jobs?limit=2")).result
    assert [j["id"] for j in page["children"]] == ids[::-1][:2]
    assert page["_page"]["totalCount"] == 5 and page["_page"]["pageSize"] == 2
    seen = [j["id"] for j in page["children"]]
    while "next" in page["_links"]:
        page = (await api(client, "GET", page["_links"]["next"]["href"])).result
        seen += [j["id"] for j in page["children"]]
    assert seen == ids[::-1]
    assert (await api(client, "GET", "/api/segment/jobs?status=FAILED")).result["children"] == []
    assert len((await api(client, "GET", "/api/segment/jobs?status=SUCCEEDED")).result["children"]) == 5
    (await api(client, "GET", "/api/segment/jobs?status=DONE")).assert_failure(400, "invalid_status")
    (await api(client, "GET", "/api/segment/jobs?cursor=nonsense")).assert_failure(400, "invalid_cursor")


@pytest.mark.parametrize("body, code", [
    ({}, "invalid_segments"), ({"segments": []}, "invalid_segments"), ([{"segmentId": "x1"}], "invalid_segments"),
    ([{"segmentId": "*"}, {"segmentId": "1"}], "invalid_segments"), ({"segments": [1]}, "invalid_segments"),
    ({"segments": [{"segmentId": True}]}, "invalid_segments"), ({"segments": [], "extra": 1}, "unknown_field"),
    ("not json", "invalid_json")])
async def test_malformed_job_requests_are_400(client, db, body, code):
    options = {"data": body} if isinstance(body, str) else {"json": body}
    (await api(client, "POST", "/api/segment/jobs", **options)).assert_failure(400, code)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_tenancy_and_scopes(client, db, make_key):
    source = await source_with(client, db, "people", ["email", "Country"], [["u1", "US"]])
    definition, _audience = await define(db, await endpoint_of(db, source), "us", 'Country = "US"', [source])
    created = await run(client, definition)
    other_admin = await make_key("admin", "other")
    other = f"/api/segment/jobs/{created['id']}"
    (await api(client, "GET", other, other_admin)).assert_failure(404, "segment_job_not_found")
    (await api(client, "DELETE", other, other_admin)).assert_failure(404, "segment_job_not_found")
    (await api(client, "POST", "/api/segment/jobs", other_admin,
               json=[{"segmentId": str(definition)}])).assert_failure(404, "segment_definition_not_found")
    assert (await api(client, "GET", "/api/segment/jobs", other_admin)).result["children"] == []
    # "*" of the other endpoint evaluates none of this endpoint's definitions
    theirs = await post_job(client, [{"segmentId": "*"}], other_admin)
    answer = await wait_for(client, theirs["id"], "SUCCEEDED", other_admin)
    assert answer["metrics"]["segmentedProfileCounter"] == {} and answer["errors"] == []
    writer, reader = await make_key("write"), await make_key("read")
    assert (await api(client, "GET", other, writer)).result["id"] == created["id"]
    (await api(client, "GET", other, reader)).assert_failure(403)
    (await api(client, "POST", "/api/segment/jobs", writer, json=[{"segmentId": "*"}])).assert_failure(403)
    (await api(client, "DELETE", other, writer)).assert_failure(403)
    (await api(client, "GET", "/api/segment/jobs/abc")).assert_failure(404, "segment_job_not_found")


async def test_three_sources_and_one_never_pushed_to(client, db):
    """The merge over three sources (and one with no members table yet, which adds no profile); ``"*"``
    takes the endpoint's active Contact Lists and Databases, lowest id first, and never a Queries audience."""
    a, b = await two_sources(client, db)
    empty = await source_with(client, db, "empty", [], [])
    c = await source_with(client, db, "C", ["email", "Age", "Zip"], [["b2@x", "99", "1000"], ["c1@x", "7", ""]])
    endpoint_id = await endpoint_of(db, a)
    definition, audience = await define(db, endpoint_id, "all", 'Country = "DE"', [c, empty, b, a])
    await run(client, definition)
    assert await members(db, audience) == {"b2@x": ["b2@x", "99", "1000", "DE", "Eve"]}
    row = await segment_row(db, audience)
    assert row["attributes"] == ["email", "Age", "Zip", "country", "name"]
    every, every_audience = await define(db, endpoint_id, "every", 'Country = "US"', None)  # a, empty, b, c
    answer = await run(client, every)
    assert answer["metrics"]["totalProfiles"] == 6
    assert await members(db, every_audience) == {
        "a1@x": ["a1@x", "US", "Ann", "", ""], "a2@x": ["a2@x", "US", "Bob", "30", ""],
        "b1@x": ["b1@x", "US", "Dee", "", ""]}
    assert (await segment_row(db, every_audience))["attributes"] == ["email", "Country", "Name", "Age", "Zip"]


async def test_in_segment_reads_only_the_endpoints_segments(client, db, make_key):
    """``inSegment`` reads a segment of the same endpoint (its members as they were when the job began:
    an audience built by the same job is read as it was before); another endpoint's segment is answered
    like a missing one: an error of the definition with the argument's position."""
    a, b = await two_sources(client, db)
    endpoint_id = await endpoint_of(db, a)
    us, us_audience = await define(db, endpoint_id, "us", 'Country = "US"', [a, b])
    await run(client, us)
    both, both_audience = await define(db, endpoint_id, "us-30", f'inSegment("{us_audience}") and Age = "30"', [b])
    await run(client, both)
    assert set(await members(db, both_audience)) == {"a2@x"}
    never = await source_with(client, db, "never", [], [])
    empty, empty_audience = await define(db, endpoint_id, "in-empty", f'inSegment("{never}")', [a])
    await run(client, empty)
    assert await members(db, empty_audience) == {}
    other_key = await make_key("admin", "other")
    response = await client.post("/v1/segments", json={"name": "theirs"}, headers=other_key)
    theirs = (await response.json())["result"]["segmentId"]
    await push_ok(client, theirs, csv_body(["email"], [["a1@x"]]), headers=other_key)
    expression = f'Country = "US" and inSegment("{theirs}")'
    sneaky, sneaky_audience = await define(db, endpoint_id, "sneaky", expression, [a])
    failed = await run(client, sneaky, wanted="FAILED")
    [error] = failed["errors"]
    assert error["code"] == "invalid_expression" and error["segmentId"] == str(sneaky)
    assert f"position {expression.index('inSegment')}" in error["msg"]
    assert await members(db, sneaky_audience) == {}


async def test_the_benchmark_definition_against_python(client, db):
    """``Country = "US" and LastPurchase occurs <= 30 days before now`` over the bench's generated
    profiles selects exactly what Python selects from the same rows."""
    today = dt.datetime.now(dt.timezone.utc).date()
    lines = list(bench_data.profile_rows(3000, today))
    rows = [line.rstrip("\n").split(",") for line in lines]
    source = await source_with(client, db, "profiles", ["Email", "Country", "LastPurchase"], rows)
    expression = 'Country = "US" and LastPurchase occurs <= 30 days before now'
    definition, audience = await define(db, await endpoint_of(db, source), "bench", expression, [source])
    await run(client, definition)
    expected = {email for email, country, bought in rows
                if country == "US" and 0 <= (today - dt.date.fromisoformat(bought)).days <= 30}
    assert set(await members(db, audience)) == expected
    assert 0.08 < len(expected) / len(rows) < 0.12


async def test_a_queued_job_canceled_never_runs(aiohttp_client, settings, db, database_url):
    client = await app_client(aiohttp_client, settings, export_workers=1)
    source = await source_with(client, db, "people", ["email", "Country"], [["u1", "US"]])
    definition, _audience = await define(db, await endpoint_of(db, source), "us", 'Country = "US"', [source])
    async with BusyWorker(client, database_url):
        queued = await post_job(client, [{"segmentId": str(definition)}])
        assert queued["status"] == "QUEUED"
        canceled = (await api(client, "DELETE", f"/api/segment/jobs/{queued['id']}")).result
        assert canceled["status"] == "CANCELLED"
    await run(client, definition)  # claimed after the canceled one would have been: jobs go oldest first
    row = await db.fetchrow("SELECT status, started_at, attempts FROM jobs WHERE id = $1", int(queued["id"]))
    assert dict(row) == {"status": "canceled", "started_at": None, "attempts": 0}
    assert (await job(client, queued["id"]))["metrics"]["segmentedProfileCounter"] == {}


async def test_a_definition_the_database_cannot_build_is_an_error_and_the_job_goes_on(client, db):
    """A build that fails in PostgreSQL (here: a source's members table the gateway cannot read any more)
    rolls back its own transaction only: the job evaluates the next definition on the same connection."""
    broken = await source_with(client, db, "broken", ["email", "Country"], [["x1", "US"]])
    fine = await source_with(client, db, "fine", ["email", "Country"], [["u1", "US"], ["u2", "FR"]])
    endpoint_id = await endpoint_of(db, fine)
    first, first_audience = await define(db, endpoint_id, "first", 'Country = "US"', [broken])
    second, second_audience = await define(db, endpoint_id, "second", 'Country = "US"', [fine])
    await db.execute(f"ALTER TABLE audience.members_{broken} RENAME COLUMN attrs TO renamed")
    answer = await run(client, first, second)
    assert [(e["code"], e["segmentId"]) for e in answer["errors"]] == [("evaluation_failed", str(first))]
    assert "log has the details" in answer["errors"][0]["msg"]
    assert await members(db, first_audience) == {} and set(await members(db, second_audience)) == {"u1"}
    assert await build_tables(db) == []


async def test_a_job_changes_its_audiences_all_at_once(aiohttp_client, settings, db, database_url):
    """Two definitions: while the job waits for the second audience's lock (the first already locked and
    counted), readers of the first still see its previous members; canceled then, neither audience changed."""
    client = await app_client(aiohttp_client, settings, job_lease=1.0)
    source = await source_with(client, db, "people", ["email", "Country"], [["u1", "US"], ["u2", "FR"]])
    endpoint_id = await endpoint_of(db, source)
    us, us_audience = await define(db, endpoint_id, "us", 'Country = "US"', [source])
    fr, fr_audience = await define(db, endpoint_id, "fr", 'Country = "FR"', [source])
    await run(client, us, fr)
    before = (await members(db, us_audience), await members(db, fr_audience))
    await push_ok(client, str(source), csv_body(["email", "Country"], [["u3", "US"], ["u4", "FR"]]))
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(QUERIES["segment_apply_exclusive"], fr_audience)
            created = await post_job(client, [{"segmentId": str(us)}, {"segmentId": str(fr)}])
            await wait_for_blocked_backends(db, 1)
            assert len(await build_tables(db)) == 2
            assert await sync_rows(client, us_audience) == (["email", "Country"], [["u1", "US"]])
            canceled = (await api(client, "DELETE", f"/api/segment/jobs/{created['id']}")).result
            assert canceled["status"] == "CANCELLED"
            await eventually(lambda: no_blocked_backends(db), "the canceled job to stop waiting")
    finally:
        await holder.close()
    assert (await members(db, us_audience), await members(db, fr_audience)) == before
    answer = await run(client, us, fr)
    assert set(await members(db, us_audience)) == {"u1", "u3"} and set(await members(db, fr_audience)) == {"u2", "u4"}
    assert answer["metrics"]["segmentedProfileByStatusCounter"] == {
        str(us): {"realized": 1, "existing": 1, "exited": 0}, str(fr): {"realized": 1, "existing": 1, "exited": 0}}


async def test_a_replace_of_a_source_committing_during_the_build_does_not_empty_the_audience(client, db,
                                                                                            database_url):
    """The build's snapshot is its first statement; a REPLACE of a source that commits after it swaps the
    source's members table for a new one whose rows that snapshot cannot see (the build would read the source
    as empty and every member from it would exit). The build share-locks its sources' rows first: the REPLACE
    waits for the build, which reads the source as it was; the next job reads the REPLACE.

    Held deterministically: the test locks source A's members table, so the build's count of the profiles
    (after its snapshot, before it reads B) waits; the REPLACE of B is sent then; the lock is released once
    the REPLACE committed (as it could before the fix) or waits for a lock itself (the build's)."""
    a = await source_with(client, db, "A", ["email", "Country"], [["a1", "US"]])
    b = await source_with(client, db, "B", ["email", "Country"], [["b1", "US"], ["b2", "US"]])
    definition, audience = await define(db, await endpoint_of(db, a), "us", 'Country = "US"', [a, b])
    members_a = f"audience.members_{a}"
    replaced: asyncio.Task | None = None
    try:
        async with table_lock(database_url, members_a):
            created = await post_job(client, {"segments": [{"segmentId": str(definition)}]})
            await eventually(lambda: waiting_for_table(db, members_a), "the build to wait for A's members table")
            replaced = asyncio.create_task(push(client, str(b), csv_body(["email", "Country"], [["b3", "US"]]),
                                                "REPLACE", total=1, number=1))

            async def replace_committed_or_waits() -> bool:
                return replaced.done() or await blocked_backends(db) >= 2

            await eventually(replace_committed_or_waits, "the REPLACE to commit or to wait for the build")
        reply = await replaced
    finally:
        if replaced is not None and not replaced.done():
            replaced.cancel()
    assert reply.result["replaceCommitted"] is True
    answer = await wait_for(client, created["id"], "SUCCEEDED")
    assert set(await members(db, audience)) == {"a1", "b1", "b2"}  # B as the build's snapshot saw it
    assert answer["metrics"]["segmentedProfileByStatusCounter"] == {
        str(definition): {"realized": 3, "existing": 0, "exited": 0}}
    assert (await segment_row(db, audience))["member_count"] == 3
    await run(client, definition)
    assert set(await members(db, audience)) == {"a1", "b3"}


async def test_a_push_committing_while_the_build_waits_for_a_source_makes_it_start_again(client, db, database_url):
    """The build's first statement share-locks its source's row; a push holding it (here: the row lock and
    the writes a push makes) commits meanwhile, so REPEATABLE READ refuses the lock (could not serialize):
    the build starts again, in a snapshot that sees the push, and the job succeeds."""
    source = await source_with(client, db, "people", ["email", "Country"], [["u1", "US"], ["u2", "US"]])
    definition, audience = await define(db, await endpoint_of(db, source), "us", 'Country = "US"', [source])
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT id FROM segments WHERE id = $1 FOR NO KEY UPDATE", source)
            await holder.execute(f"DELETE FROM audience.members_{source} WHERE identity = 'u1'")
            await holder.execute("UPDATE segments SET member_count = member_count - 1 WHERE id = $1", source)
            created = await post_job(client, {"segments": [{"segmentId": str(definition)}]})
            await wait_for_blocked_backends(db, 1)  # the build's share lock waits for the push
    finally:
        await holder.close()
    answer = await wait_for(client, created["id"], "SUCCEEDED")
    assert answer["errors"] == []
    assert await members(db, audience) == {"u2": ["u2", "US"]}
    assert answer["metrics"]["totalProfiles"] == 1
