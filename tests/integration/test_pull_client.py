"""``audience-gateway pull``: the direct route or the job flow, byte-identical to what the API serves, and
a download that breaks midway resumed with Range/If-Range (job data) or started over (direct route)."""

import dataclasses

import pytest

from gateway.app import create_app
from tests.integration.client_helpers import FaultyProxy, run_pull, server_url
from tests.integration.pull_helpers import Job, download, people, segment_with, sync_get

SMALL_SYNC_LIMIT = 100


@pytest.fixture
async def gateway(settings, aiohttp_server):
    """The gateway under test serves at most SMALL_SYNC_LIMIT members directly."""
    changed = dataclasses.replace(settings, sync_export_max_rows=SMALL_SYNC_LIMIT)
    return server_url(await aiohttp_server(create_app(changed)))


@pytest.fixture
async def proxy(gateway, aiohttp_server):
    proxy = FaultyProxy(gateway)
    proxy.url = server_url(await aiohttp_server(proxy.app()))
    return proxy


def is_download(request) -> bool:
    return request.method == "GET" and "/data" in request.path


async def the_job(db) -> Job:
    row = await db.fetchrow("SELECT id, data_id FROM jobs ORDER BY id DESC LIMIT 1")
    return Job(row["id"], row["data_id"])


async def test_a_small_segment_comes_by_the_direct_route(proxy, client, tmp_path):
    segment_id = await segment_with(client, people(SMALL_SYNC_LIMIT))
    output = tmp_path / "out.csv"
    outcome = await run_pull(proxy.url, segment_id, output)
    assert outcome.code == 0, outcome
    assert output.read_bytes() == (await sync_get(client, segment_id)).body
    assert not output.with_name("out.csv.part").exists()
    assert "directly" in outcome.out
    assert [seen.path for seen in proxy.seen] == [f"/v1/segments/{segment_id}/data"]


async def test_a_large_segment_comes_by_an_export_job(proxy, client, db, tmp_path):
    segment_id = await segment_with(client, people(5000))
    output = tmp_path / "out.csv"
    outcome = await run_pull(proxy.url, segment_id, output)
    assert outcome.code == 0, outcome
    job = await the_job(db)
    assert output.read_bytes() == (await download(client, job)).body
    assert f"by export job {job.id}" in outcome.out and "5,000 rows" in outcome.out
    assert [seen.path for seen in proxy.seen if seen.method == "POST"] == ["/v1/jobs"]


async def test_a_broken_job_download_resumes_where_it_stopped(proxy, client, db, tmp_path):
    segment_id = await segment_with(client, people(20_000))
    proxy.fail("cut", when=lambda request: is_download(request) and "/jobs/" in request.path)
    output = tmp_path / "out.csv"

    outcome = await run_pull(proxy.url, segment_id, output)

    assert outcome.code == 0, outcome
    job = await the_job(db)
    whole = (await download(client, job)).body
    assert output.read_bytes() == whole
    first, second = [seen for seen in proxy.seen if seen.path == job.data_path]
    assert "Range" not in first.headers
    offset = int(second.headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset < len(whole)
    assert second.headers["If-Range"].startswith('"job-')
    assert "resumed 1 time(s)" in outcome.out and f"resuming at byte {offset}" in outcome.err


async def test_a_broken_direct_download_starts_over(proxy, client, tmp_path):
    segment_id = await segment_with(client, people(SMALL_SYNC_LIMIT))
    proxy.fail("cut", when=is_download)
    output = tmp_path / "out.csv"
    outcome = await run_pull(proxy.url, segment_id, output)
    assert outcome.code == 0, outcome
    assert output.read_bytes() == (await sync_get(client, segment_id)).body
    assert [("Range" in seen.headers) for seen in proxy.seen] == [False, False]


async def test_failures_exit_3_and_leave_no_file(proxy, client, db, tmp_path):
    output = tmp_path / "out.csv"
    unknown = await run_pull(proxy.url, "999999", output)
    assert unknown.code == 3, unknown
    assert "HTTP 404 segment_not_found" in unknown.err
    assert not output.exists()

    segment_id = await segment_with(client, people(500))
    proxy.fail(500, times=100, when=lambda request: is_download(request) and "/jobs/" in request.path)
    failing = await run_pull(proxy.url, segment_id, output)
    assert failing.code == 3, failing
    assert "gave up after 4 attempts" in failing.err
    assert not output.exists()

    await db.execute("UPDATE jobs SET status = 'error', reason = 'disk on fire'")
    await db.execute("CREATE FUNCTION fail_new_jobs() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "NEW.status := 'error'; NEW.reason := 'disk on fire'; RETURN NEW; END $$")
    await db.execute("CREATE TRIGGER fail_new_jobs BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION fail_new_jobs()")
    errored = await run_pull(proxy.url, segment_id, output)
    assert errored.code == 3, errored
    assert "ended error: disk on fire" in errored.err
