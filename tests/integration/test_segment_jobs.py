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


import pytest

from tests.integration.segment_job_helpers import (build_tables, define, endpoint_of, job, members, post_job, run,
                                                   source_with, use_language, wait_for)
from tests.integration.manage_helpers import segment_row


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
