"""Upload history (``GET /api/segments/{id}/uploads``) and every rejected row
(``GET /api/segments/{id}/rejects?upload=…``): checked against what was pushed and what the pushes answered."""

import csv
import io

import pytest

from gateway import state
from gateway.ingest import rejects
from gateway.ingest.history import sweep_uploads
from tests.conftest import AUTH
from tests.integration.push_helpers import app_client, chunked, create_segment, overtaken_push, push, push_ok

pytestmark = pytest.mark.pg15


async def history(client, segment_id: str, headers=AUTH, **params) -> dict:
    response = await client.get(f"/api/segments/{segment_id}/uploads", params=params, headers=headers)
    assert response.status == 200, await response.text()
    return (await response.json())["result"]


async def reject_rows(client, segment_id: str, upload_id: int) -> list[list[str]]:
    response = await client.get(f"/api/segments/{segment_id}/rejects", params={"upload": str(upload_id)},
                                headers=AUTH)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/csv"
    rows = list(csv.reader(io.StringIO(await response.text(), newline="")))
    assert rows[0] == ["line", "reason", "raw"]
    return rows[1:]


COUNT_KEYS = ("numReceived", "numInvalid", "numAdded", "numRemoved")


def counts_of(result: dict) -> dict:
    return {key: int(result[key]) for key in COUNT_KEYS if key in result}


async def test_history_has_one_entry_per_batch_with_the_counts_of_its_response(client):
    segment_id = await create_segment(client)
    pushes = []  # (result, method, T, k, source segment, request id)

    async def send(body, action, request_id, **options):
        result = await push_ok(client, segment_id, body, action, headers={"X-Request-ID": request_id}, **options)
        pushes.append((result, action, options.get("total", 1), options.get("number", 1), request_id))
        return result

    await send("email,name\na@x.com,A\nb@x.com,B\n,empty\nc@x.com\n", "ADD", "req-add")
    await send("email\nb@x.com\nzz@x.com\n", "REMOVE", "req-remove")
    staged = await send("email,name\nr1@x.com,1\n", "REPLACE", "req-r1", total=2, number=1,
                        sourceEndpointID="exchange", sourceSegmentID="S9")
    committed = await send("email,name\nr2@x.com,2\nbad\n", "REPLACE", "req-r2", total=2, number=2,
                           sourceEndpointID="exchange", sourceSegmentID="S9")
    again = await send("email,name\nr2@x.com,2\nbad\n", "REPLACE", "req-again", total=2, number=2,
                       sourceEndpointID="exchange", sourceSegmentID="S9")
    assert (staged["replaceCommitted"], committed["replaceCommitted"], again["replaceCommitted"]) == \
        (False, True, False)

    entries = (await history(client, segment_id))["uploads"]
    assert len(entries) == len(pushes)
    assert [entry["id"] for entry in entries] == sorted((entry["id"] for entry in entries), reverse=True)
    for entry, (result, action, total, number, request_id) in zip(entries, reversed(pushes)):
        assert {key: value for key, value in entry.items() if key in COUNT_KEYS and value is not None} == \
            counts_of(result), (entry, result)
        assert (entry["method"], entry["totalBatchCount"], entry["currentBatchNumber"], entry["requestId"]) == \
            (action, total, number, request_id)
        assert entry["rejectsStored"] == int(result["numInvalid"]) and entry["rejectsNotStored"] == 0
        assert entry["durationSeconds"] >= 0 and entry["startedAt"]
    again_entry, commit_entry, stage_entry, remove_entry, add_entry = entries
    assert (add_entry["replaceSessionId"], add_entry["replaceCommitted"]) == (None, None)
    assert "lateRetry" not in add_entry
    assert remove_entry["numRemoved"] == 1 and remove_entry["numAdded"] is None
    assert stage_entry["replaceSessionId"] == commit_entry["replaceSessionId"] is not None
    assert (stage_entry["replaceCommitted"], commit_entry["replaceCommitted"]) == (False, True)
    # Sent again after its share committed: staged into a new session of the same key (nothing recorded
    # from the first run is answered instead).
    assert again_entry["replaceCommitted"] is False
    assert again_entry["replaceSessionId"] not in (None, commit_entry["replaceSessionId"])
    assert {(e["sourceEndpointID"], e["sourceSegmentID"]) for e in (stage_entry, commit_entry, again_entry)} == \
        {("exchange", "S9")}
    assert (add_entry["sourceEndpointID"], add_entry["sourceSegmentID"]) == ("", "")


async def test_history_pages_newest_first_with_a_cursor(client):
    segment_id = await create_segment(client)
    for number in range(5):
        await push_ok(client, segment_id, f"email\nu{number}@x.com\n")
    everything = (await history(client, segment_id))["uploads"]
    seen, cursor = [], None
    while True:
        page = await history(client, segment_id, limit="2", **({"cursor": cursor} if cursor else {}))
        assert len(page["uploads"]) <= 2
        seen += page["uploads"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == everything and len(seen) == 5


async def test_history_pages_by_the_one_paging_rule_and_still_takes_a_raw_id_cursor(client):
    """The rule of every /api list (limit up to 1000, an opaque cursor); the old cursor, an upload id as
    digits, still pages from that id."""
    segment_id = await create_segment(client)
    for number in range(3):
        await push_ok(client, segment_id, f"email\nu{number}@x.com\n")
    everything = (await history(client, segment_id, limit="1000"))["uploads"]
    first = await history(client, segment_id, limit="1")
    assert not first["nextCursor"].isdigit()
    assert (await history(client, segment_id, cursor=str(everything[0]["id"])))["uploads"] == everything[1:]


def invalid_rows(max_field_bytes: int) -> list[tuple[str, str]]:
    """(raw text as sent, reason) of rows that are invalid under a 3-column header ``email,name,note``."""
    long_raw = "x@x.com,name," + "n" * 2000  # over the field limit, and over the raw cap
    return [
        ("only@x.com,two", "expected 3 fields, got 2"),
        ("a@x.com,b,c,d", "expected 3 fields, got 4"),
        (" ,nobody,here", "empty identity (email)"),
        ('q@x.com,"multi\nline",x,extra', "expected 3 fields, got 4"),
        ("nul@x.com,a\x00b,c", "contains a NUL character"),
        (long_raw, f"field exceeds {max_field_bytes} bytes"),
    ]


async def test_the_rejects_csv_is_every_invalid_row_pushed(aiohttp_client, settings):
    client = await app_client(aiohttp_client, settings, max_field_bytes=1500)
    segment_id = await create_segment(client)
    bad = invalid_rows(1500)
    lines, expected, line = ["email,name,note"], [], 2
    for number, (raw, reason) in enumerate(bad * 3):  # valid rows between the invalid ones
        lines.append(f"ok{number}@x.com,fine,1")
        line += 1
        lines.append(raw)
        expected.append((line, reason, raw))
        line += raw.count("\n") + 1
    body = "\n".join(lines) + '\nlast@x.com,"unterminated\n'
    expected.append((line, "unterminated quoted field", 'last@x.com,"unterminated'))
    result = await push_ok(client, segment_id, body.encode())
    assert result["numInvalid"] == str(len(expected))
    assert result["numAdded"] == str(len(bad) * 3)

    upload_id = (await history(client, segment_id))["uploads"][0]["id"]
    stored = await reject_rows(client, segment_id, upload_id)
    want = []
    for line, reason, raw in expected:
        raw = raw.replace("\x00", "\ufffd")
        if len(raw) > rejects.RAW_LIMIT:
            raw = raw[:rejects.RAW_LIMIT] + rejects.TRUNCATED
        want.append([str(line), reason, raw])
    assert stored == want
    assert [sample["line"] for sample in result["invalidSamples"]] == [int(row[0]) for row in want[:10]]


async def test_invalid_utf8_rows_are_stored_with_replacement_characters(client):
    segment_id = await create_segment(client)
    result = await push_ok(client, segment_id, b"email,name\nok@x.com,fine\nbad@x.com,caf\xe9\n")
    assert result["numInvalid"] == "1"
    upload_id = (await history(client, segment_id))["uploads"][0]["id"]
    assert await reject_rows(client, segment_id, upload_id) == [["3", "invalid UTF-8", "bad@x.com,caf\ufffd"]]


async def test_a_large_all_invalid_body_stores_every_row_in_chunks(client, db):
    segment_id = await create_segment(client)
    count = rejects.FLUSH_ROWS * 2 + 123
    body = "email,name\n" + "".join(f"v{i}@x.com,ok\nbad{i}\n" for i in range(count))
    result = await push_ok(client, segment_id, body)
    assert (result["numReceived"], result["numInvalid"], result["numAdded"]) == (str(2 * count), str(count), str(count))
    entry = (await history(client, segment_id))["uploads"][0]
    assert (entry["rejectsStored"], entry["rejectsNotStored"]) == (count, 0)
    stored = await reject_rows(client, segment_id, entry["id"])
    assert stored == [[str(3 + 2 * i), "expected 2 fields, got 1", f"bad{i}"] for i in range(count)]


async def test_rejects_beyond_the_segment_cap_are_only_counted(aiohttp_client, settings):
    client = await app_client(aiohttp_client, settings, rejects_max_per_segment=5)
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email,name\nx\ny\nz\n")
    await push_ok(client, segment_id, "email,name\np\nq\nr\ns\n")
    second, first = (await history(client, segment_id))["uploads"]
    assert (first["rejectsStored"], first["rejectsNotStored"]) == (3, 0)
    assert (second["rejectsStored"], second["rejectsNotStored"], second["numInvalid"]) == (2, 2, 4)
    assert [row[2] for row in await reject_rows(client, segment_id, second["id"])] == ["p", "q"]


async def test_rejects_beyond_the_endpoint_cap_are_only_counted(aiohttp_client, settings, make_key):
    """The cap holds over all of an endpoint's segments: a new segment brings no new room; another endpoint
    has its own."""
    client = await app_client(aiohttp_client, settings, rejects_max_per_endpoint=5)
    first, second, third = [await create_segment(client, name) for name in ("one", "two", "three")]
    await push_ok(client, first, "email,name\nx\ny\nz\n")
    await push_ok(client, second, "email,name\np\nq\nr\ns\n")
    await push_ok(client, third, "email,name\nt\n")
    entries = [(await history(client, segment))["uploads"] for segment in (first, second, third)]
    assert [(entry["rejectsStored"], entry["rejectsNotStored"], entry["numInvalid"]) for [entry] in entries] == [
        (3, 0, 3), (2, 2, 4), (0, 1, 1)]
    assert [row[2] for row in await reject_rows(client, second, entries[1][0]["id"])] == ["p", "q"]

    acme = await make_key("admin", endpoint="acme")
    elsewhere = await create_segment(client, headers=acme)
    await push_ok(client, elsewhere, "email,name\nu\n", headers=acme)
    [entry] = (await history(client, elsewhere, headers=acme))["uploads"]
    assert (entry["rejectsStored"], entry["rejectsNotStored"]) == (1, 0)


async def test_a_valid_body_stores_no_rejects(client, db):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email\na@x.com\n")
    entry = (await history(client, segment_id))["uploads"][0]
    assert (entry["rejectsStored"], entry["numInvalid"]) == (0, 0)
    assert await reject_rows(client, segment_id, entry["id"]) == []
    assert await db.fetchval("SELECT count(*) FROM upload_rejects") == 0


async def test_a_refused_push_leaves_no_history_and_no_rejects(aiohttp_client, settings, db):
    """413 found mid-stream, after chunks of rejected rows were already COPYed: all rolled back."""
    client = await app_client(aiohttp_client, settings, max_body_bytes=200_000)
    segment_id = await create_segment(client)
    parts = [b"email,name\n"] + [b"bad\n" * rejects.FLUSH_ROWS] * 3 + [b"x" * 100_000]
    assert len(b"".join(parts)) > 200_000 > len(b"".join(parts[:-1]))
    reply = await push(client, segment_id, chunked(*parts, pause=0.2))  # read part by part: flushes happen
    reply.assert_failure(413)
    assert (await history(client, segment_id))["uploads"] == []
    assert await db.fetchval("SELECT count(*) FROM upload_rejects") == 0


async def test_rows_rejected_under_the_lock_are_stored_too(streaming_client, db):
    """An upload overtaken by the first upload (which fixes another identity column) finds some of its rows
    without an identity only once it holds the segment's lock: they are rejected and stored then."""
    segment_id = await create_segment(streaming_client)
    # streams with "name" as its identity; the first upload applied meanwhile: identity "id"
    reply = await overtaken_push(streaming_client, db, segment_id, b"name,id\nOne,K1\n", b"Two,\n", "id,name\nK0,Zero\n")
    assert (reply.result["numInvalid"], reply.result["numAdded"]) == ("1", "1")
    entry = (await history(streaming_client, segment_id))["uploads"][0]
    assert (entry["numInvalid"], entry["rejectsStored"]) == (1, 1)
    assert await reject_rows(streaming_client, segment_id, entry["id"]) == [["3", "empty identity (id)", "Two,"]]


async def test_not_found_and_bad_parameters(client, make_key):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email\nbad,row\n")
    upload_id = (await history(client, segment_id))["uploads"][0]["id"]
    other = await create_segment(client, "other")
    stranger = await make_key("admin", endpoint="acme")

    async def status(path, headers=AUTH, **params):
        response = await client.get(path, params=params, headers=headers)
        body = await response.json()
        assert body["responseStatus"] == "failure" or response.status == 200
        return response.status, body.get("error", {}).get("code")

    rejects_path = f"/api/segments/{segment_id}/rejects"
    assert await status(rejects_path) == (400, "missing_filter")
    assert await status(rejects_path, upload="abc") == (400, "invalid_upload")
    assert await status(rejects_path, upload=str(upload_id + 1000)) == (404, "upload_not_found")
    assert await status(f"/api/segments/{other}/rejects", upload=str(upload_id)) == (404, "upload_not_found")
    assert await status(rejects_path, stranger, upload=str(upload_id)) == (404, "segment_not_found")
    assert await status(f"/api/segments/{segment_id}/uploads", stranger) == (404, "segment_not_found")
    assert await status("/api/segments/999999/uploads") == (404, "segment_not_found")
    assert await status(f"/api/segments/{segment_id}/uploads", limit="0") == (400, "invalid_limit")
    assert await status(f"/api/segments/{segment_id}/uploads", cursor="x") == (400, "invalid_cursor")


async def test_reading_history_needs_the_write_scope(client, make_key):
    segment_id = await create_segment(client)
    read, write = await make_key("read"), await make_key("write")
    response = await client.get(f"/api/segments/{segment_id}/uploads", headers=read)
    assert response.status == 403
    assert (await client.get(f"/api/segments/{segment_id}/uploads")).status == 401
    await history(client, segment_id, headers=write)


async def test_the_sweeper_drops_old_rejects_then_old_history(client, db):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email\nbad,row\n")
    upload_id = (await history(client, segment_id))["uploads"][0]["id"]
    pool = client.server.app[state.POOL]
    assert await sweep_uploads(pool, rejects_ttl=3600, history_ttl=3600) == 0
    assert len(await reject_rows(client, segment_id, upload_id)) == 1
    await db.execute("UPDATE uploads SET started_at = started_at - interval '2 hours'")
    assert await sweep_uploads(pool, rejects_ttl=3600, history_ttl=86400) == 1
    response = await client.get(f"/api/segments/{segment_id}/rejects", params={"upload": str(upload_id)},
                                headers=AUTH)
    assert (response.status, (await response.json())["error"]["code"]) == (410, "rejects_expired")
    assert (await history(client, segment_id))["uploads"][0]["rejectsExpired"] is True
    assert await db.fetchval("SELECT count(*) FROM upload_rejects") == 0
    await sweep_uploads(pool, rejects_ttl=3600, history_ttl=3600)
    assert (await history(client, segment_id))["uploads"] == []


async def test_text_postgresql_cannot_store_is_a_400_not_a_500(client, db):
    """Found by schemathesis: a NUL in a JSON string, a recorded batch parameter or a header name."""
    response = await client.post("/v1/segments", json={"name": "a\x00b"}, headers=AUTH)
    assert (response.status, (await response.json())["error"]["code"]) == (400, "invalid_field")
    segment_id = await create_segment(client)
    (await push(client, segment_id, "email\na@x.com\n", sourceSegmentID="S\x001")).assert_failure(400, "invalid_field")
    (await push(client, segment_id, "em\x00ail\na@x.com\n")).assert_failure(400, "invalid_header")
    assert await db.fetchval("SELECT count(*) FROM uploads") == 0
    for method, path, options in (("PATCH", f"/api/segments/{segment_id}", {"json": {"name": "a\x00b"}}),
                                  ("GET", "/api/segments", {"params": {"q": "a\x00b"}})):
        response = await client.request(method, path, headers=AUTH, **options)
        assert (response.status, (await response.json())["error"]["code"]) == (400, "invalid_field")


async def test_a_deleted_segment_keeps_its_history_and_rejects_readable(client):
    """Like every /api route, the upload routes show a segment whatever its status."""
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email\nbad,row\n")
    response = await client.delete(f"/api/segments/{segment_id}", headers=AUTH)
    assert response.status == 200, await response.text()
    entry = (await history(client, segment_id))["uploads"][0]
    assert await reject_rows(client, segment_id, entry["id"]) == [["2", "expected 1 fields, got 2", "bad,row"]]
    response = await client.get(f"/api/segments/{segment_id}/uploads", params={"limit": "5", "page": "2"},
                                headers=AUTH)
    assert (response.status, (await response.json())["error"]["code"]) == (400, "unknown_parameter")


async def share_rows(client, segment_id: str, **query: str):
    response = await client.get(f"/api/segments/{segment_id}/rejects", params=query, headers=AUTH)
    assert response.status == 200, await response.text()
    rows = list(csv.reader(io.StringIO(await response.text(), newline="")))
    assert rows[0] == ["line", "reason", "raw", "upload"]
    return response.headers, rows[1:]


async def test_first_line_numbers_rejects_by_the_files_lines(client):
    """The body's first data row (after the header, a blank line and before a quoted newline) is line
    firstLine; later rows keep their distance; the samples, the stored rejects and the history agree."""
    segment_id = await create_segment(client)
    body = b'email,name\n\n"",Ann\nok@x.com,"two\nlines"\nshort\n'
    result = await push_ok(client, segment_id, body, firstLine="40")
    assert result["invalidSamples"] == [{"line": 40, "reason": "empty identity (email)"},
                                        {"line": 43, "reason": "expected 2 fields, got 1"}]
    [entry] = (await history(client, segment_id))["uploads"]
    assert entry["firstLine"] == 40
    assert await reject_rows(client, segment_id, entry["id"]) == [
        ["40", "empty identity (email)", '"",Ann'], ["43", "expected 2 fields, got 1", "short"]]
    # without it, the body's own lines (as before)
    await push_ok(client, segment_id, body)
    latest = (await history(client, segment_id))["uploads"][0]
    assert latest["firstLine"] is None
    assert [row[0] for row in await reject_rows(client, segment_id, latest["id"])] == ["3", "6"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "9" * 16])
async def test_an_invalid_first_line_is_a_400_that_changes_nothing(client, db, value):
    segment_id = await create_segment(client)
    reply = await push(client, segment_id, "email\na@x.com\n", firstLine=value)
    reply.assert_failure(400, "invalid_batch")
    assert "firstLine" in reply.body["error"]["message"]
    assert (await history(client, segment_id))["uploads"] == []
    assert await db.fetchval("SELECT count(*) FROM upload_rejects") == 0


async def test_rejects_of_a_share_by_source_segment_id_are_every_upload_of_it(client):
    segment_id = await create_segment(client)
    share = {"sourceSegmentID": "crm-7", "totalBatchCount": "2"}
    await push_ok(client, segment_id, 'email\n""\nb@x.com\n""\n', query="currentBatchNumber=2&firstLine=5&"
                  + "&".join(f"{k}={v}" for k, v in share.items()))
    await push_ok(client, segment_id, 'email\na@x.com\n""\n', query="currentBatchNumber=1&firstLine=2&"
                  + "&".join(f"{k}={v}" for k, v in share.items()))
    await push_ok(client, segment_id, 'email\n""\n', sourceSegmentID="another")
    headers, rows = await share_rows(client, segment_id, sourceSegmentID="crm-7")
    uploads = {entry["currentBatchNumber"]: str(entry["id"])
               for entry in (await history(client, segment_id))["uploads"] if entry["sourceSegmentID"] == "crm-7"}
    reason = "empty identity (email)"
    assert rows == [["3", reason, '""', uploads[1]], ["5", reason, '""', uploads[2]],
                    ["7", reason, '""', uploads[2]]]  # by line, whatever order the batches came in
    assert headers["X-Rejects-Not-Stored"] == "0" and "X-Rejects-Expired-Uploads" not in headers


async def test_a_share_whose_rejects_partly_expired_streams_the_rest_and_says_so(client, db):
    segment_id = await create_segment(client)
    for number in (1, 2):
        await push_ok(client, segment_id, 'email\n""\n', total=2, number=number, sourceSegmentID="s",
                      firstLine=str(number * 10))
    first, second = sorted(entry["id"] for entry in (await history(client, segment_id))["uploads"])
    await db.execute("UPDATE uploads SET rejects_expired_at = now() WHERE id = $1", first)
    await db.execute("DELETE FROM upload_rejects WHERE upload_id = $1", first)
    headers, rows = await share_rows(client, segment_id, sourceSegmentID="s")
    assert [row[0] for row in rows] == ["20"] and headers["X-Rejects-Expired-Uploads"] == "1"
    await db.execute("UPDATE uploads SET rejects_expired_at = now() WHERE id = $1", second)
    response = await client.get(f"/api/segments/{segment_id}/rejects", params={"sourceSegmentID": "s"},
                                headers=AUTH)
    assert (response.status, (await response.json())["error"]["code"]) == (410, "rejects_expired")


async def test_the_rejects_filters_say_what_they_need(client):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, 'email\n""\n', sourceSegmentID="s")
    path = f"/api/segments/{segment_id}/rejects"

    async def failure(**params):
        response = await client.get(path, params=params, headers=AUTH)
        body = await response.json()
        return response.status, body["error"]["code"], body["error"]["message"]

    status, code, message = await failure()
    assert (status, code) == (400, "missing_filter")
    assert all(name in message for name in ("upload=", "replaceSession=", "sourceSegmentID="))
    status, code, message = await failure(upload="1", sourceSegmentID="s")
    assert (status, code) == (400, "conflicting_filters") and "upload and sourceSegmentID" in message
    assert (await failure(replaceSession="x"))[:2] == (400, "invalid_replace_session")
    assert (await failure(sourceSegmentID=""))[:2] == (400, "invalid_source_segment_id")
    assert (await failure(sourceSegmentID="nope"))[:2] == (404, "upload_not_found")
    assert (await failure(replaceSession="12345"))[:2] == (404, "upload_not_found")
