"""Byte ranges on job data (RFC 9110): the download's length is measured when the job completes, so the
identity answer has Content-Length, a strong ETag and Accept-Ranges, and one range is served as 206."""

import gzip

import pytest

from tests.integration.pull_helpers import create_job, download, fetch, people, segment_with, wait_for_status


@pytest.fixture
async def job(client):
    segment_id = await segment_with(client, people(20_000))  # ~0.6 MB: the COPY sends many chunks
    job = await create_job(client, segment_id)
    await wait_for_status(client, job, "complete")
    return job


async def whole(client, job) -> bytes:
    answer = await download(client, job, headers={"Accept-Encoding": "identity"})
    assert answer.status == 200
    return answer.body


async def test_the_whole_download_has_its_length_etag_and_accepts_ranges(client, job):
    first = await download(client, job, headers={"Accept-Encoding": "identity"})
    assert first.status == 200
    assert first.headers["Accept-Ranges"] == "bytes"
    assert int(first.headers["Content-Length"]) == len(first.body) > 600_000
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first.body.startswith(b"email,name\n") and first.body.count(b"\n") == 20_001
    assert await whole(client, job) == first.body  # the same bytes every time

    head = await fetch(client, "HEAD", job.data_path, {"Accept-Encoding": "identity"})
    assert head.status == 200
    assert (head.headers["Content-Length"], head.headers["ETag"]) == (str(len(first.body)), etag)
    assert head.body == b""


@pytest.mark.pg15
async def test_a_range_is_the_slice_of_the_whole(client, job):
    body = await whole(client, job)
    size = len(body)
    cases = {"bytes=0-0": (0, 0), "bytes=5-99": (5, 99), "bytes=300000-300100": (300_000, 300_100),
             "bytes=1000-": (1000, size - 1), f"bytes={size - 10}-": (size - 10, size - 1),
             "bytes=-10": (size - 10, size - 1), f"bytes=-{size + 5}": (0, size - 1),
             f"bytes=100-{size + 100}": (100, size - 1)}
    for header, (start, end) in cases.items():
        answer = await download(client, job, headers={"Range": header})
        assert answer.status == 206, (header, answer.status, answer.body[:200])
        assert answer.headers["Content-Range"] == f"bytes {start}-{end}/{size}", header
        assert int(answer.headers["Content-Length"]) == end - start + 1, header
        assert "Content-Encoding" not in answer.headers
        assert answer.body == body[start:end + 1], header
    # Ranges that end early cancel their COPY; the pool's connections must all still work.
    for _ in range(15):
        assert (await download(client, job, headers={"Range": "bytes=10-20"})).body == body[10:21]
    assert await whole(client, job) == body


async def test_if_range_resumes_only_the_same_representation(client, job):
    body = await whole(client, job)
    etag = (await download(client, job, headers={"Accept-Encoding": "identity"})).headers["ETag"]
    same = await download(client, job, headers={"Range": "bytes=100-", "If-Range": etag})
    assert (same.status, same.body) == (206, body[100:])
    for validator in ('"something-else"', f"W/{etag}", "Mon, 23 Nov 2026 10:00:00 GMT"):
        other = await download(client, job, headers={"Range": "bytes=100-", "If-Range": validator,
                                                     "Accept-Encoding": "identity"})
        assert (other.status, other.body) == (200, body), validator


async def test_unsatisfiable_ranges_get_416_with_the_length(client, job):
    size = len(await whole(client, job))
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        answer = await download(client, job, headers={"Range": header})
        answer.assert_failure(416, "range_not_satisfiable")
        assert answer.headers["Content-Range"] == f"bytes */{size}"


async def test_ranges_the_server_may_ignore_get_the_whole_body(client, job):
    body = await whole(client, job)
    for header in ("bytes=0-1,5-6", "items=0-5", "bytes=9-3", "bytes=-", "bytes=abc"):
        answer = await download(client, job, headers={"Range": header, "Accept-Encoding": "identity"})
        assert (answer.status, answer.body) == (200, body), header


async def test_gzip_answers_offer_no_ranges_and_a_range_is_sent_as_is(client, job):
    body = await whole(client, job)
    packed = await download(client, job, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Ranges" not in packed.headers and "ETag" not in packed.headers
    assert gzip.decompress(packed.body) == body
    ranged = await download(client, job, headers={"Accept-Encoding": "gzip", "Range": "bytes=10-"},
                            auto_decompress=False)
    assert (ranged.status, ranged.body) == (206, body[10:])
    assert "Content-Encoding" not in ranged.headers


async def test_a_job_without_a_measured_length_serves_no_ranges(client, db, job):
    body = await whole(client, job)
    await db.execute("UPDATE jobs SET data_bytes = NULL WHERE id = $1", job.id)
    answer = await download(client, job, headers={"Range": "bytes=10-", "Accept-Encoding": "identity"})
    assert (answer.status, answer.body) == (200, body)
    assert "Accept-Ranges" not in answer.headers and "ETag" not in answer.headers
