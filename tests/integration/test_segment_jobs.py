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
