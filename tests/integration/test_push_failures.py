"""Uploads that break half-way (the client hangs up, the database connection dies): nothing is applied,
nothing is left behind (no open transaction, no ``incoming`` table, no REPLACE session or staging
table), every pooled connection comes back, and the next push works."""

import asyncio

import pytest

from gateway import state
from tests.conftest import ADMIN_KEY
from tests.helpers import copy_in_progress, eventually
from tests.integration.push_helpers import (DROPPED, METHOD_OF, INTRUSIVE_BODY, identities, push, push_ok,
                                            seeded_segment, snapshot)

ROWS = b"".join(b"row%04d@x.com,Row,%d\n" % (i, i) for i in range(400))


async def assert_clean_afterwards(client, db, segment_id: str, before: dict) -> None:
    """Nothing applied or left behind, the pool is whole again, and the app still takes pushes."""
    pool = client.app[state.POOL]

    async def pool_idle() -> bool:
        return pool.get_size() - pool.get_idle_size() == 0

    await eventually(pool_idle, "every pooled connection to be released")
    assert await snapshot(db, segment_id) == before
    assert await db.fetchval("SELECT count(*) FROM pg_class WHERE relname = 'incoming' AND relpersistence = 't'") == 0
    assert await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND state LIKE 'idle in transaction%'") == 0
    for number in range(3):  # more than one pooled connection gets used
        assert (await push_ok(client, segment_id, f"email\nafter{number}@x.com\n"))["numAdded"] == "1"
    assert {"after0@x.com", "after1@x.com", "after2@x.com"} <= await identities(db, segment_id)


@pytest.mark.parametrize("action", ["ADD", "REPLACE"])
@pytest.mark.parametrize("moment", ["in-header", "mid-copy"])
async def test_a_client_hanging_up_mid_body_applies_nothing(streaming_client, db, action, moment):
    client = streaming_client  # an ADD streams its body into incoming: the COPY below is visible
    segment_id, before = await seeded_segment(client, db)
    head = (f"{METHOD_OF[action]} /v1/segments/{segment_id}/data?totalBatchCount=1&currentBatchNumber=1 HTTP/1.1\r\n"
            f"Host: {client.server.host}:{client.server.port}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
            f"Content-Type: text/csv\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n").encode()
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        if moment == "in-header":
            writer.write(head + b"email,na")
            await writer.drain()
            await asyncio.sleep(0.1)
        else:
            writer.write(head + INTRUSIVE_BODY + ROWS)
            await writer.drain()
            await eventually(lambda: copy_in_progress(db), "the upload's COPY to start")
    finally:
        writer.close()
        await writer.wait_closed()
    await assert_clean_afterwards(streaming_client, db, segment_id, before)


@pytest.mark.parametrize("action", ["ADD", "REPLACE", "REMOVE"])
async def test_a_database_connection_killed_mid_upload_applies_nothing(streaming_client, db, action):
    segment_id, before = await seeded_segment(streaming_client, db)
    killed: list[int] = []

    async def body():
        yield INTRUSIVE_BODY + ROWS[:len(ROWS) // 2]
        pids = await eventually(lambda: copy_in_progress(db), "the upload's COPY to start")
        killed.extend(await db.fetchval("SELECT array_agg(pid) FROM pg_stat_activity "
                                        "WHERE pid = any($1::int[]) AND pg_terminate_backend(pid)", pids) or [])
        yield ROWS[len(ROWS) // 2:]

    reply = await push(streaming_client, segment_id, body(), action)
    assert len(killed) == 1
    if reply.status != DROPPED:
        reply.assert_failure(503, "database_unavailable")
    await assert_clean_afterwards(streaming_client, db, segment_id, before)
