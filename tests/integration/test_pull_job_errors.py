"""Jobs' failure answers: POST /v1/jobs validation, 404 for a data id that does not match or a job this
endpoint cannot see (answered alike, with ``"result": {"id": …, "status": "unknown"}``), 410 once the export
has expired — and then the sweeper drops its data."""

import pytest

from tests.conftest import AUTH
from tests.helpers import members_table
from tests.integration.pull_helpers import (Job, create_job, download, eventually, export_via_job, fetch, job_row,
                                            people, post_job, segment_with, wait_for_status, without_id)
from tests.integration.push_helpers import Reply, app_client

JOB_TYPE = "ExportSegmentData"
SEGMENT = object()  # stands for the test segment's id (as an int) in the payloads below


def fill(payload: dict, segment_id: str) -> dict:
    """The payload with the test segment's id in place of ``SEGMENT``."""
    return {key: int(segment_id) if value is SEGMENT else value for key, value in payload.items()}


@pytest.mark.parametrize("field", ["segmentId", "segmentID"])  # segmentID: as in the source's curl line
@pytest.mark.parametrize("as_text", [False, True], ids=["int", "str"])
async def test_post_job_accepts_the_segment_id_both_ways(client, db, field, as_text):
    segment_id = await segment_with(client, people(2))
    result = (await post_job(client, {field: segment_id if as_text else int(segment_id), "jobType": JOB_TYPE})).result
    assert set(result) == {"jobId", "jobDataId"} and all(type(value) is int for value in result.values()), result
    job = Job(result["jobId"], result["jobDataId"])
    assert await db.fetchval("SELECT segment_id FROM jobs WHERE id = $1", job.id) == int(segment_id)
    await wait_for_status(client, job, "complete")


@pytest.mark.parametrize("payload, status, code", [
    ({"segmentId": SEGMENT, "jobType": "ExportSegmentMetadata"}, 400, "invalid_job_type"),
    ({"segmentId": SEGMENT, "jobType": "exportsegmentdata"}, 400, "invalid_job_type"),
    ({"segmentId": SEGMENT}, 400, "invalid_job_type"),
    ({"jobType": JOB_TYPE}, 400, "invalid_segment_id"),
    ({"segmentId": None, "jobType": JOB_TYPE}, 400, "invalid_segment_id"),
    ({"segmentId": True, "jobType": JOB_TYPE}, 400, "invalid_segment_id"),
    ({"segmentId": 1.5, "jobType": JOB_TYPE}, 400, "invalid_segment_id"),
    ({"segmentId": [1], "jobType": JOB_TYPE}, 400, "invalid_segment_id"),
    ({"segmentId": "abc", "jobType": JOB_TYPE}, 404, "segment_not_found"),
    ({"segmentId": "0", "jobType": JOB_TYPE}, 404, "segment_not_found"),
    ({"segmentId": -1, "jobType": JOB_TYPE}, 404, "segment_not_found"),
    ({"segmentId": 999_999, "jobType": JOB_TYPE}, 404, "segment_not_found"),
    ({"segmentId": "999999", "jobType": JOB_TYPE}, 404, "segment_not_found"),
], ids=lambda value: repr(value) if isinstance(value, dict) else None)
async def test_post_job_rejects(client, db, payload, status, code):
    segment_id = await segment_with(client, people(2))
    (await post_job(client, fill(payload, segment_id))).assert_failure(status, code)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_post_job_needs_a_json_object(client):
    for body in (b"segmentId=1", b"[1]", b""):
        response = await client.post("/v1/jobs", data=body, headers={**AUTH, "Content-Type": "application/json"})
        Reply(response.status, await response.text(), response.content_type).assert_failure(400, "invalid_json")


async def test_post_job_for_another_endpoints_segment_is_404(client, make_key):
    theirs = await segment_with(client, people(2), headers=await make_key("admin", endpoint="other"))
    (await post_job(client, {"segmentId": theirs, "jobType": JOB_TYPE})).assert_failure(404, "segment_not_found")


async def test_data_id_must_match_the_job(client):
    segment_id = await segment_with(client, people(2))
    first, _, _ = await export_via_job(client, segment_id)
    second, _, _ = await export_via_job(client, segment_id)
    for data_id in (first.data_id + 1, second.data_id, "abc", ""):
        if data_id != first.data_id:
            (await fetch(client, "GET", f"/v1/jobs/{first.id}/data/{data_id}")).assert_failure(404)
    assert (await download(client, first)).status == 200


async def test_unknown_job_is_404_unknown_and_another_endpoints_job_looks_the_same(client, make_key):
    other = await make_key("admin", endpoint="other")
    theirs = await create_job(client, await segment_with(client, people(2), headers=other), headers=other)
    await wait_for_status(client, theirs, "complete", headers=other)
    unknown = Job(theirs.id + 1000, theirs.data_id)
    for method, path in (("GET", "/v1/jobs/{id}"), ("DELETE", "/v1/jobs/{id}"),
                         ("GET", "/v1/jobs/{id}/data/" + str(theirs.data_id))):
        missing = (await fetch(client, method, path.format(id=unknown.id))).assert_failure(404, "job_not_found")
        assert missing["result"] == {"id": unknown.id, "status": "unknown"}, missing
        seen_from_here = (await fetch(client, method, path.format(id=theirs.id))).assert_failure(404)
        assert without_id(seen_from_here, theirs.id) == without_id(missing, unknown.id), (method, path)
    for malformed in ("abc", "0", "99999999999999999999"):
        answer = (await fetch(client, "GET", f"/v1/jobs/{malformed}")).assert_failure(404, "job_not_found")
        assert answer["result"]["status"] == "unknown", answer
    # and theirs is untouched (the DELETE above did not cancel it)
    await wait_for_status(client, theirs, "complete", headers=other)
    assert (await download(client, theirs, headers=other)).status == 200


async def test_an_expired_export_is_410_and_its_data_is_dropped(aiohttp_client, settings, db):
    client = await app_client(aiohttp_client, settings, export_ttl=2.0)
    job, _, rows = await export_via_job(client, await segment_with(client, people(3)))  # within the TTL
    assert len(rows) == 3

    async def gone() -> bool:
        answer = await download(client, job)
        assert answer.status in (200, 410), answer.status
        return answer.status == 410

    await eventually(gone, "the export to expire")
    (await download(client, job)).assert_failure(410)

    async def dropped() -> bool:
        row = await job_row(db, job)
        return not row["has_table"] and row["data_dropped_at"] is not None

    await eventually(dropped, "the sweeper to drop the expired export", timeout=5.0)
    (await download(client, job)).assert_failure(410)
    assert (await job_row(db, job))["status"] == "complete"


async def test_a_failed_job_gives_a_plain_reason_and_logs_the_details(client, db, caplog):
    """A snapshot the database refuses (here: the members table lost its column) ends the job in error
    with a reason in plain words; the driver's exception, its SQL and the traceback go to the log only."""
    segment_id = await segment_with(client, people(2))
    await db.execute(f"ALTER TABLE {members_table(segment_id)} RENAME COLUMN attrs TO lost")
    job = await create_job(client, segment_id)
    await wait_for_status(client, job, "error")

    reason = (await fetch(client, "GET", f"/v1/jobs/{job.id}")).reply.result["reason"]
    assert reason == await db.fetchval("SELECT reason FROM jobs WHERE id = $1", job.id)
    assert reason == ("export failed: the database could not copy the segment's audience; "
                      "the gateway's log has the details")
    details = [record for record in caplog.records if record.getMessage().startswith(f"job {job.id} failed")]
    assert details and details[0].exc_info is not None
    assert 'column "attrs" does not exist' in str(details[0].exc_info[1])
