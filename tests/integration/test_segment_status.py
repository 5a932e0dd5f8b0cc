"""Segment status on every ``/v1`` route: ``inactive`` is readable but not listed and refuses pushes (409,
before the body is read, nothing changed); ``deleted`` is 404 everywhere, exactly like a missing segment.

The routes come from the app's router: a new ``/v1`` route fails ``test_every_v1_route_is_classified``
until this file says what status means for it.
"""

from __future__ import annotations

import gzip
import re

import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.manage_helpers import api, set_status
from tests.integration.pull_helpers import Job, create_job, wait_for_status
from tests.integration.push_helpers import create_segment, push, seeded_segment, snapshot, streaming_push

pytestmark = pytest.mark.pg15

V1_ROUTES = sorted({(route.method, route.resource.canonical)
                    for route in create_app(Settings.load(environ={})).router.routes()
                    if route.resource is not None and route.resource.canonical.startswith("/v1")})
LISTING = {("GET", "/v1/segments"), ("HEAD", "/v1/segments")}
CREATION = {("POST", "/v1/segments")}
PUSHES = {(method, "/v1/segments/{segment_id}/data") for method in ("POST", "PUT", "DELETE")}
CSV = b"email,name\nnew@x.com,New\n"
# What a route answers for a segment of each status when the segment is fine otherwise (active as today).
READ_STATUS = {("GET", "/v1/jobs/{job_id}/data/{data_id}"): 200, ("DELETE", "/v1/jobs/{job_id}"): 200}


def test_every_v1_route_is_classified():
    for method, path in V1_ROUTES:
        assert (method, path) in LISTING | CREATION | PUSHES or "{" in path or path == "/v1/jobs", (method, path)


def concrete(path: str, segment_id: str, job: Job) -> str:
    values = {"segment_id": segment_id, "job_id": job.id, "data_id": job.data_id}
    return re.sub(r"\{(\w+)\}", lambda match: str(values[match.group(1)]), path)


async def call(client, method: str, path: str, segment_id: str, job: Job):
    if (method, path) in PUSHES:
        return await push(client, segment_id, CSV, {"POST": "ADD", "PUT": "REPLACE", "DELETE": "REMOVE"}[method])
    if (method, path) == ("POST", "/v1/jobs"):
        return await api(client, method, path, json={"segmentId": segment_id, "jobType": "ExportSegmentData"})
    return await api(client, method, concrete(path, segment_id, job))


@pytest.mark.parametrize("method, path", [pytest.param(m, p, id=f"{m} {p}") for m, p in V1_ROUTES
                                          if (m, p) not in CREATION])
async def test_status_on_every_v1_route(client, db, method, path):
    answers = {}
    for status in ("active", "inactive", "deleted"):
        segment_id, _ = await seeded_segment(client, db)
        job = await create_job(client, segment_id)
        await wait_for_status(client, job, "complete")
        if status != "active":
            await set_status(client, segment_id, status)
        before = await snapshot(db, segment_id)
        reply = await call(client, method, path, segment_id, job)
        answers[status] = reply
        if (method, path) in LISTING:
            listed = [] if method == "HEAD" else [item["id"] for item in reply.result["list"]]
            assert reply.status == 200
            assert (int(segment_id) in listed) == (status == "active" and method == "GET"), (status, listed)
        elif status == "deleted" and method == "HEAD":
            assert reply.status == 404
        elif status == "deleted":
            reply.assert_failure(404, "job_not_found" if "{job_id}" in path else "segment_not_found")
        elif status == "inactive" and (method, path) in PUSHES:
            reply.assert_failure(409, "segment_inactive")
            assert await snapshot(db, segment_id) == before, "a refused push changes nothing"
        else:
            assert reply.status == answers["active"].status == READ_STATUS.get((method, path), 200), \
                (status, reply.status, reply.text[:200])
    if "{" in path and method != "HEAD":
        missing = await call(client, method, path, "987654321", Job(987654321, 1))
        assert (answers["deleted"].status, answers["deleted"].body["error"]) == \
            (missing.status, {**missing.body["error"], "message": answers["deleted"].body["error"]["message"]})


async def test_inactive_push_is_refused_before_the_body_is_read(client, db):
    segment_id, before = await seeded_segment(client, db)
    await set_status(client, segment_id, "inactive")
    # Not gzip at all: reading the body would answer 400 invalid_gzip.
    reply = await push(client, segment_id, b"this is not gzip", headers={"Content-Encoding": "gzip"})
    reply.assert_failure(409, "segment_inactive")
    assert await snapshot(db, segment_id) == before


async def test_made_inactive_while_the_body_streams(streaming_client, db):
    """The status is checked again under the segment's lock: a push whose body was streaming when the
    segment became inactive is refused and applies nothing."""
    segment_id, before = await seeded_segment(streaming_client, db)
    async with streaming_push(streaming_client, db, segment_id, b"email,name\n", b"late@x.com,Late\n") as pushing:
        await set_status(streaming_client, segment_id, "inactive")
    (await pushing).assert_failure(409, "segment_inactive")
    assert await snapshot(db, segment_id) == before


async def test_reactivated_segment_takes_pushes_and_is_listed_again(client, db):
    segment_id = await create_segment(client)
    await set_status(client, segment_id, "inactive")
    await set_status(client, segment_id, "active")
    assert (await push(client, segment_id, gzip.compress(CSV), headers={"Content-Encoding": "gzip"})).status == 200
    listing = (await api(client, "GET", "/v1/segments")).result
    assert int(segment_id) in [item["id"] for item in listing["list"]]
