"""``audience-gateway push``: a file (plain or gzip, quoted newlines, CRLF) sent as exact batches to the
real app on a real port, through a proxy that records the requests and injects faults."""

import asyncio
import csv
import gzip
import io
import os

import pytest

from gateway.app import create_app
from gateway.client import batches
from tests.conftest import ADMIN_KEY, AUTH
from tests.integration.client_helpers import FaultyProxy, run_push, server_url, write_csv
from tests.integration.pull_helpers import by_identity, sync_rows
from tests.integration.push_helpers import create_segment, identities, push_ok

HEADER = ["Email", "Name", "Note"]


def noted(count: int, prefix: str = "p") -> list[list[str]]:
    """Rows whose notes hold newlines (every third), commas and quotes."""
    return [[f"{prefix}{i:04d}@x.com", f"Name {i}", f'line one\nline "two", {i}' if i % 3 == 0 else f"n{i}"]
            for i in range(count)]


@pytest.fixture
async def gateway(settings, aiohttp_server):
    return server_url(await aiohttp_server(create_app(settings)))


@pytest.fixture
async def proxy(gateway, aiohttp_server):
    proxy = FaultyProxy(gateway)
    proxy.url = server_url(await aiohttp_server(proxy.app()))
    return proxy


def batch_numbers(proxy: FaultyProxy) -> list[int]:
    return sorted(int(seen.query["currentBatchNumber"]) for seen in proxy.data_requests())


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
async def test_records_with_quoted_newlines_go_in_exact_batches_of_the_users_bytes(proxy, client, tmp_path,
                                                                                      packed):
    rows = noted(25)
    path = write_csv(tmp_path / "people.csv", HEADER, rows, newline="\r\n")
    original = path.read_bytes()
    if packed:
        path = tmp_path / "people.csv.gz"
        path.write_bytes(gzip.compress(original))
    segment_id = await create_segment(client)

    outcome = await run_push(proxy.url, path, segment=segment_id, batch_rows=10)

    assert outcome.code == 0, outcome
    sent = proxy.data_requests("POST")
    assert batch_numbers(proxy) == [1, 2, 3]
    assert {(seen.query["totalBatchCount"], seen.query["shareAction"]) for seen in sent} == {("3", "ADD")}
    header = b"Email,Name,Note\r\n"
    bodies = [seen.body for seen in sorted(sent, key=lambda seen: int(seen.query["currentBatchNumber"]))]
    assert all(body.startswith(header) for body in bodies)
    assert header + b"".join(body[len(header):] for body in bodies) == original  # the user's bytes, cut
    assert [body.count(b"\r\n") for body in bodies] == [11, 11, 6]  # header + records (quoted newlines are LF)
    assert await sync_rows(client, segment_id) == (HEADER, by_identity(rows))
    assert "3 batch(es): 25 rows" in outcome.out
    assert "received 25, invalid 0, added 25" in outcome.out
    assert "rows" in outcome.err and "MB/s" in outcome.err  # plain progress lines (not a terminal)


async def test_batches_go_in_parallel_up_to_the_concurrency(proxy, client, tmp_path):
    path = write_csv(tmp_path / "people.csv", HEADER, noted(40))
    proxy.delay = 0.05
    for concurrency, most in ((4, 4), (1, 1)):
        segment_id = await create_segment(client)
        proxy.max_in_flight = 0
        outcome = await run_push(proxy.url, path, segment=segment_id, batch_rows=4, concurrency=concurrency)
        assert outcome.code == 0, outcome
        assert (await sync_rows(client, segment_id))[1] == by_identity(noted(40))
        assert (most == 1 and proxy.max_in_flight == 1) or 2 <= proxy.max_in_flight <= most, proxy.max_in_flight


async def test_replace_over_many_parallel_batches_commits_once_with_the_files_last_rows(proxy, client, tmp_path):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "Email,Name,Note\nold@x.com,Old,o\n")
    rows = noted(30)
    rows[29] = [rows[2][0], "Last wins", "late"]  # batch 8 repeats an identity of batch 1
    path = write_csv(tmp_path / "people.csv", HEADER, rows)

    outcome = await run_push(proxy.url, path, segment=segment_id, mode="replace", batch_rows=4, concurrency=3)

    assert outcome.code == 0, outcome
    assert batch_numbers(proxy) == list(range(1, 9))
    sent = proxy.data_requests()
    assert {seen.method for seen in sent} == {"PUT"}
    assert len({(seen.query["totalBatchCount"], seen.query["sourceSegmentID"]) for seen in sent}) == 1
    expected = by_identity([row for row in rows[:29] if row[0] != rows[2][0]] + [rows[29]])
    assert await sync_rows(client, segment_id) == (HEADER, expected)
    assert "REPLACE committed, audience size 29" in outcome.out

    # The same file again after an ADD is a new REPLACE (its own session): the ADD's member goes.
    await push_ok(client, segment_id, "Email,Name,Note\nextra@x.com,Extra,e\n")
    again = await run_push(proxy.url, path, segment=segment_id, mode="replace", batch_rows=4)
    assert again.code == 0, again
    assert await sync_rows(client, segment_id) == (HEADER, expected)


async def test_remove_and_identity_column(proxy, client, db, tmp_path):
    rows = [["Ann", "a@x.com", "1"], ["Bob", "b@x.com", "2"], ["Cid", "c@x.com", "3"]]
    path = write_csv(tmp_path / "people.csv", ["Name", "Mail", "Note"], rows)
    segment_id = await create_segment(client)
    assert (await run_push(proxy.url, path, segment=segment_id, ids="name", batch_rows=2)).code == 0
    assert {seen.query["ids"] for seen in proxy.data_requests()} == {"name"}
    assert await db.fetchval("SELECT identity_attribute FROM segments WHERE id = $1", int(segment_id)) == "Name"

    gone = write_csv(tmp_path / "gone.csv", ["Name"], [["Ann"], ["Cid"], ["Nobody"]])
    outcome = await run_push(proxy.url, gone, segment=segment_id, ids="Name", mode="remove", batch_rows=2)
    assert outcome.code == 0, outcome
    assert "received 3, invalid 0, removed 2" in outcome.out
    assert (await sync_rows(client, segment_id))[1] == [rows[1]]


async def test_strict_sends_nothing_when_the_file_has_invalid_rows(proxy, client, tmp_path):
    path = tmp_path / "bad.csv"
    # line 5 is a record of two fields, after a record spanning lines 2-3
    path.write_bytes(b'Email,Name,Note\na@x.com,Ann,"two\nlines"\nb@x.com,Bob,n\nc@x.com,short\nd@x.com,Dan,n\n')
    segment_id = await create_segment(client)

    strict = await run_push(proxy.url, path, segment=segment_id, strict=True, batch_rows=2)
    assert strict.code == 1, strict
    assert proxy.data_requests() == []
    assert "line 5: expected 3 fields, got 2" in strict.err

    lenient = await run_push(proxy.url, path, segment=segment_id, batch_rows=2)
    assert lenient.code == 0, lenient
    assert "received 4, invalid 1, added 3" in lenient.out
    assert "line 5: expected 3 fields, got 2" in lenient.out  # the server's sample, mapped to the file's line


async def test_strict_exits_1_when_the_server_finds_invalid_rows(proxy, client, tmp_path):
    path = write_csv(tmp_path / "people.csv", HEADER, [["a@x.com", "Ann", "n"], ["  ", "Nobody", "n"]])
    segment_id = await create_segment(client)
    outcome = await run_push(proxy.url, path, segment=segment_id, strict=True)
    assert outcome.code == 1, outcome
    assert "received 2, invalid 1, added 1" in outcome.out
    assert (await sync_rows(client, segment_id))[1] == [["a@x.com", "Ann", "n"]]


async def test_usage_errors_exit_2_before_any_request(proxy, tmp_path):
    good = write_csv(tmp_path / "ok.csv", HEADER, noted(3))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(good.read_bytes())[:-12])
    duplicate = tmp_path / "dup.csv"
    duplicate.write_bytes(b"email,EMAIL\na,b\n")
    for path, options, message in ((tmp_path / "missing.csv", {}, "cannot read"), (empty, {}, "empty body"),
                                   (broken, {}, "cannot read"), (duplicate, {}, "duplicate"),
                                   (good, {"ids": "Phone"}, "--ids 'Phone' is not a column")):
        outcome = await run_push(proxy.url, path, segment="1", **options)
        assert outcome.code == 2, (path, outcome)
        assert message in outcome.err, (path, outcome.err)
    assert proxy.seen == []


async def test_a_wrong_key_or_segment_fails_before_the_file_is_read(proxy, client, db, tmp_path, monkeypatch):
    """The key and the segment are checked before the count: a file that the count would reject (its gzip
    stream is cut short, which only its end shows: the header is in its first chunk, not the cut) gets
    exit 3 with the server's error, not exit 2."""
    monkeypatch.setattr(batches, "CHUNK_BYTES", 256)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(write_csv(tmp_path / "ok.csv", HEADER, noted(30)).read_bytes())[:-12])
    segment_id = await create_segment(client)

    wrong_key = await run_push(proxy.url, broken, segment=segment_id, key="not-a-key")
    assert wrong_key.code == 3, wrong_key
    assert "HTTP 401" in wrong_key.err and "cannot read" not in wrong_key.err and "count" not in wrong_key.err

    unknown = await run_push(proxy.url, broken, segment="999999")
    assert unknown.code == 3 and "HTTP 404 segment_not_found" in unknown.err, unknown

    create = await run_push(proxy.url, broken, create="Never", key="not-a-key")
    assert create.code == 3 and "HTTP 401" in create.err, create
    assert [(seen.method, seen.path) for seen in proxy.seen] == [
        ("GET", f"/v1/segments/{segment_id}"), ("GET", "/v1/segments/999999"), ("GET", "/v1/segments")]
    assert await db.fetchval("SELECT count(*) FROM segments WHERE name = 'Never'") == 0


async def test_5xx_429_and_connection_errors_are_retried(proxy, client, tmp_path):
    rows = noted(12)
    path = write_csv(tmp_path / "people.csv", HEADER, rows)
    segment_id = await create_segment(client)
    is_data = lambda request: request.path.endswith("/data")  # noqa: E731
    proxy.fail(500, when=is_data)
    proxy.fail(429, when=is_data, retry_after="0")
    proxy.fail("drop", when=is_data)
    proxy.fail("lose", when=is_data)  # the gateway applied it, the answer was lost: sent again

    outcome = await run_push(proxy.url, path, segment=segment_id, mode="replace", batch_rows=5, concurrency=2)

    assert outcome.code == 0, outcome
    assert len(proxy.data_requests()) == 3 + 4
    # (aiohttp itself retries a PUT once when a reused connection closes; ours is the loop around it)
    assert "HTTP 500 injected" in outcome.err and "HTTP 429 injected" in outcome.err, outcome.err
    assert await sync_rows(client, segment_id) == (HEADER, by_identity(rows))
    assert "REPLACE committed, audience size 12" in outcome.out


async def test_a_server_that_keeps_failing_ends_with_exit_3(proxy, client, db, tmp_path):
    path = write_csv(tmp_path / "people.csv", HEADER, noted(3))
    segment_id = await create_segment(client)
    proxy.fail(503, times=100, when=lambda request: request.path.endswith("/data"))
    outcome = await run_push(proxy.url, path, segment=segment_id, concurrency=1)
    assert outcome.code == 3, outcome
    assert len(proxy.data_requests()) == 4
    assert "batch 1/1: HTTP 503 injected: injected failure (gave up after 4 attempts)" in outcome.err
    assert await identities(db, segment_id) == set()


async def test_other_4xx_fail_fast_with_the_servers_error(proxy, client, tmp_path):
    path = write_csv(tmp_path / "people.csv", HEADER, noted(30))
    unknown = await run_push(proxy.url, path, segment="999999")
    assert unknown.code == 3, unknown
    assert "HTTP 404 segment_not_found" in unknown.err
    assert len(proxy.seen) == 1

    segment_id = await create_segment(client)
    proxy.fail(400, when=lambda request: request.path.endswith("/data"))
    refused = await run_push(proxy.url, path, segment=segment_id, batch_rows=10, concurrency=1)
    assert refused.code == 3, refused
    assert len(proxy.data_requests()) == 1
    assert "batch 1/3: HTTP 400 injected" in refused.err

    proxy.fail(400, when=lambda request: request.query.get("currentBatchNumber") == "3")
    partly = await run_push(proxy.url, path, segment=segment_id, batch_rows=10, concurrency=1)
    assert partly.code == 3, partly
    assert "2 of 3 batch(es) had been accepted" in partly.err


async def test_unreachable_gateway_exits_3(unused_tcp_port, tmp_path):
    path = write_csv(tmp_path / "people.csv", HEADER, noted(3))
    outcome = await run_push(f"http://127.0.0.1:{unused_tcp_port}", path, segment="1")
    assert outcome.code == 3, outcome
    assert "gave up after 4 attempts" in outcome.err


async def test_create_makes_one_segment_even_when_its_answer_is_lost(proxy, client, db, tmp_path):
    rows = noted(7)
    path = write_csv(tmp_path / "people.csv", HEADER, rows)
    proxy.fail("lose", when=lambda request: request.path == "/v1/segments" and request.method == "POST")
    outcome = await run_push(proxy.url, path, create="Weekly", batch_rows=3)
    assert outcome.code == 0, outcome
    creations = [seen for seen in proxy.seen if seen.path == "/v1/segments" and seen.method == "POST"]
    assert len(creations) == 2 and len({seen.headers["Idempotency-Key"] for seen in creations}) == 1
    segment_ids = [row["id"] for row in await db.fetch("SELECT id FROM segments WHERE name = 'Weekly'")]
    assert len(segment_ids) == 1
    assert f"created segment {segment_ids[0]} (Weekly)" in outcome.err
    assert await sync_rows(client, segment_ids[0]) == (HEADER, by_identity(rows))


# Invalid rows in three batches of 3 records; quoted newlines and a blank line come before some of them.
SHARE_FILE = (b'email,name\n'                 # 1
              b'a@x.com,"multi\nline"\n'       # 2-3   batch 1
              b'"",Ann\n'                      # 4     empty identity, quotes as sent
              b'b@x.com,Bo\n'                  # 5
              b'short\n'                       # 6     batch 2: one field
              b'\n'                            # 7     blank: no row
              b'c@x.com,"x\ny"\n'              # 8-9
              b'"  ",Cy\n'                     # 10    empty identity once stripped
              b'd@x.com,Di\n'                  # 11    batch 3
              b'e@x.com,N\x00L\n'              # 12    NUL: stored as U+FFFD
              b'"",Zed\r\n')                   # 13    line ending not kept
SHARE_REJECTS = [["4", "empty identity (email)", '"",Ann'], ["6", "expected 2 fields, got 1", "short"],
                 ["10", "empty identity (email)", '"  ",Cy'], ["12", "contains a NUL character", "e@x.com,N\ufffdL"],
                 ["13", "empty identity (email)", '"",Zed']]


async def share_rejects(client, segment_id: str, **query: str) -> list[list[str]]:
    response = await client.get(f"/api/segments/{segment_id}/rejects", params=query, headers=AUTH)
    assert response.status == 200, await response.text()
    rows = list(csv.reader(io.StringIO(await response.text(), newline="")))
    assert rows[0] == ["line", "reason", "raw", "upload"]
    assert all(row[3].isdigit() for row in rows[1:])
    return [row[:3] for row in rows[1:]]


@pytest.mark.parametrize("mode", ["add", "replace"])
async def test_one_call_returns_every_reject_of_a_push_by_the_files_lines_and_bytes(proxy, client, tmp_path, mode):
    path = tmp_path / "share.csv"
    path.write_bytes(SHARE_FILE)
    segment_id = await create_segment(client)

    outcome = await run_push(proxy.url, path, segment=segment_id, batch_rows=3, mode=mode)

    assert outcome.code == 0, outcome
    sent = sorted(proxy.data_requests(), key=lambda seen: int(seen.query["currentBatchNumber"]))
    assert [seen.query["firstLine"] for seen in sent] == ["2", "6", "11"]
    assert "invalid 5" in outcome.out
    assert [line.split(":")[0].strip() for line in outcome.out.splitlines() if line.startswith("  line ")] == [
        "line 4", "line 6", "line 10", "line 12", "line 13"]  # the samples too are the file's lines
    source = sent[0].query["sourceSegmentID"]
    assert await share_rejects(client, segment_id, sourceSegmentID=source) == SHARE_REJECTS
    if mode == "replace":
        uploads = (await (await client.get(f"/api/segments/{segment_id}/uploads", headers=AUTH)).json())["result"]
        [session] = {entry["replaceSessionId"] for entry in uploads["uploads"]}
        assert await share_rejects(client, segment_id, replaceSession=str(session)) == SHARE_REJECTS

    # the summary's command, run as shown (with $KEY set), returns the same rows
    [command] = [line.split(": ", 1)[1] for line in outcome.out.splitlines() if line.startswith("every rejected row")]
    assert command.startswith("curl ") and "$KEY" in command
    run = await asyncio.create_subprocess_shell(command, stdout=asyncio.subprocess.PIPE,
                                                env={**os.environ, "KEY": ADMIN_KEY})
    stdout, _ = await asyncio.wait_for(run.communicate(), timeout=30)
    assert run.returncode == 0
    rows = list(csv.reader(io.StringIO(stdout.decode(), newline="")))
    assert rows[0] == ["line", "reason", "raw", "upload"] and [row[:3] for row in rows[1:]] == SHARE_REJECTS


async def test_a_push_without_invalid_rows_prints_no_rejects_command(proxy, client, tmp_path):
    path = write_csv(tmp_path / "ok.csv", HEADER, noted(5))
    outcome = await run_push(proxy.url, path, segment=await create_segment(client), batch_rows=2)
    assert outcome.code == 0, outcome
    assert "every rejected row" not in outcome.out
