"""A failure after the answer has started ends the transfer visibly (the connection is aborted, the
chunked body never ends) instead of writing a second HTTP answer into the body; a client that goes away
is logged as such, not as a database failure."""

import asyncio
import dataclasses
import logging

from gateway.app import create_app
from tests.integration.pull_helpers import eventually
from tests.integration.push_helpers import create_segment, push_ok
from tests.integration.test_pull_disconnect import (ACTIVE_EXPORT_COPY, ROWS, ServedLikeServe, assert_all_released,
                                                    hang_up_mid_download, large_body, slow_download)

ACTIVE_COPY_PID = ACTIVE_EXPORT_COPY.replace("count(*)", "pid")


async def served_large_segment(aiohttp_client, settings):
    app = create_app(dataclasses.replace(settings, sync_export_max_rows=ROWS))
    client = await aiohttp_client(ServedLikeServe(app))
    segment_id = await create_segment(client, "large")
    assert (await push_ok(client, segment_id, large_body()))["numAdded"] == str(ROWS)
    return client, segment_id


async def test_database_lost_mid_download_aborts_the_transfer(aiohttp_client, settings, db, caplog):
    client, segment_id = await served_large_segment(aiohttp_client, settings)
    reader, writer, received = await slow_download(client, f"/v1/segments/{segment_id}/data")
    try:
        pid = await eventually(lambda: db.fetchval(ACTIVE_COPY_PID), "the export's COPY to be running")
        assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
        received += await asyncio.wait_for(reader.read(), 10)  # to the end: the server closes the connection
    finally:
        writer.close()
    assert received.count(b"HTTP/1.1 ") == 1, "a second answer was written into the body"
    assert not received.endswith(b"\r\n0\r\n\r\n"), "the chunked body ended as if it were complete"
    assert len(received) < ROWS * 60  # it really was cut
    assert any("cut short" in record.getMessage() and record.levelno == logging.ERROR for record in caplog.records)
    await assert_all_released(client, db)


async def test_a_client_that_hangs_up_is_logged_as_gone_not_as_a_database_failure(aiohttp_client, settings, db,
                                                                                   caplog):
    client, segment_id = await served_large_segment(aiohttp_client, settings)
    caplog.set_level(logging.INFO)
    await hang_up_mid_download(client, db, f"/v1/segments/{segment_id}/data")
    await assert_all_released(client, db)

    async def download_lines() -> list[logging.LogRecord]:
        return [record for record in caplog.records if record.name == "gateway.access"
                and record.fields["method"] == "GET" and record.fields["route"].endswith("/data")]

    access = await eventually(download_lines, "the download's access line")
    assert access[-1].fields["status"] == 499 and access[-1].fields["cut_short"] == "client_gone"
    messages = [record.getMessage() for record in caplog.records]
    assert any("client closed the connection" in message for message in messages)
    assert not any("database unavailable" in message for message in messages), messages
