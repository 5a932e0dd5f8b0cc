"""Byte ranges on job data (RFC 9110): the job writes its snapshot as a file, so the download's length is
known when it completes; every answer has a strong ETag and Accept-Ranges, identity answers have
Content-Length, and one range is served as 206."""

import gzip

import pytest

from tests.integration.pull_helpers import (create_job, download, eventually, fetch, people, segment_with,
                                           wait_for_status)


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


async def stored_length(db, job) -> int | None:
    return await db.fetchval("SELECT data_bytes FROM jobs WHERE id = $1", job.id)


async def length_stored(db, job) -> int:
    """The stored length, once there (a full download stores it after its last byte is sent)."""
    return await eventually(lambda: stored_length(db, job), "the download's length to be stored")


async def test_every_download_carries_the_length_stored_when_the_job_completed(client, db, job, settings):
    stored = await stored_length(db, job)
    name = await db.fetchval("SELECT data_file FROM jobs WHERE id = $1", job.id)
    assert stored == (settings.export_path / name).stat().st_size > 600_000  # the file's size, at completion
    head = await fetch(client, "HEAD", job.data_path, {"Accept-Encoding": "identity"})
    etag = head.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and head.headers["Accept-Ranges"] == "bytes"
    assert head.headers["Content-Length"] == str(stored) and head.body == b""

    first = await download(client, job, headers={"Accept-Encoding": "identity"})
    assert first.status == 200
    assert int(first.headers["Content-Length"]) == len(first.body) == stored
    assert "Transfer-Encoding" not in first.headers
    assert (first.headers["ETag"], first.headers["Accept-Ranges"]) == (etag, "bytes")
    assert first.body.startswith(b"email,name\n") and first.body.count(b"\n") == 20_001

    second = await download(client, job, headers={"Accept-Encoding": "identity"})
    assert (second.body, second.headers["ETag"]) == (first.body, etag)  # the same bytes every time


async def test_a_gzip_download_stores_the_uncompressed_length(client, db, job):
    packed = await download(client, job, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert packed.headers["Content-Encoding"] == "gzip"
    assert await length_stored(db, job) == len(gzip.decompress(packed.body)) == len(await whole(client, job))


@pytest.mark.parametrize("header", ["bytes=300000-300100", "bytes=-10", "bytes=1000000-"])
async def test_a_range_before_any_full_download(client, db, job, header):
    ranged = await download(client, job, headers={"Range": header})
    size = await stored_length(db, job)
    body = await whole(client, job)
    assert size == len(body)
    if header == "bytes=1000000-":  # past the end
        ranged.assert_failure(416, "range_not_satisfiable")
        assert ranged.headers["Content-Range"] == f"bytes */{size}"
        return
    start, end = (300_000, 300_100) if header == "bytes=300000-300100" else (size - 10, size - 1)
    assert ranged.status == 206
    assert ranged.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    assert int(ranged.headers["Content-Length"]) == end - start + 1
    assert ranged.body == body[start:end + 1]


async def test_an_if_range_mismatch_before_any_full_download_sends_it_whole(client, db, job):
    answer = await download(client, job, headers={"Range": "bytes=10-", "If-Range": '"job-0-0"',
                                                  "Accept-Encoding": "identity"})
    assert answer.status == 200 and "Content-Range" not in answer.headers
    assert answer.body == await whole(client, job)
    assert int(answer.headers["Content-Length"]) == await length_stored(db, job) == len(answer.body)


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
