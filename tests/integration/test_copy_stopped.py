"""A COPY out that its sink stops (client gone, byte range complete) never strands its connection.

asyncpg cancels a COPY whose sink raises and waits for the cancelled command's answer before the
connection may run anything again; when the sink raised on the COPY's last chunk the command is already
over and that answer never comes. ``copy_csv_out`` terminates such a connection instead.
"""

import asyncio
import dataclasses

import asyncpg
import pytest

from gateway import state
from gateway.app import create_app
from gateway.db.csvcopy import copy_csv_out, streaming_transaction
from tests.integration.pull_helpers import create_job, eventually, fetch, people, segment_with, wait_for_status

SETTLE = 5.0  # seconds: far more than a healthy release takes


class Stop(Exception):
    pass


async def stop(data: bytes) -> None:
    raise Stop()


@pytest.mark.parametrize("query, times", [
    ("SELECT 1", 3),  # one row: its only chunk is also its last
    ("SELECT i, repeat('x', 100) FROM generate_series(1, 200000) i", 1),  # stopped mid-COPY
], ids=["last-chunk", "mid-copy"])
async def test_a_sink_that_stops_the_copy_leaves_the_pool_usable(database_url, query, times):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        for _ in range(times):
            with pytest.raises(Stop):
                async with pool.acquire() as conn, streaming_transaction(conn):
                    await copy_csv_out(conn, query, stop)
            assert await asyncio.wait_for(pool.fetchval("SELECT 2"), SETTLE) == 2
    finally:
        await asyncio.wait_for(pool.close(), SETTLE)


async def test_short_ranges_of_a_small_job_give_back_their_connections(aiohttp_client, settings):
    """Each range ends inside the COPY's last chunk: before the fix each one stranded a pooled connection
    and the request after the pool's size waited for ever."""
    client = await aiohttp_client(create_app(dataclasses.replace(settings, pool_max_size=2)))
    segment_id = await segment_with(client, people(20))
    job = await create_job(client, segment_id)
    await wait_for_status(client, job, "complete")
    whole = (await fetch(client, "GET", job.data_path, headers={"Accept-Encoding": "identity"})).body
    pool = client.app[state.POOL]
    rows_start = whole.index(b"\n") + 1  # past the header row, which is written before the COPY starts
    for end in range(rows_start + 5, rows_start + 5 + 2 * 2 + 1):
        answer = await asyncio.wait_for(
            fetch(client, "GET", job.data_path, headers={"Range": f"bytes=0-{end}", "Accept-Encoding": "identity"}),
            SETTLE)
        assert (answer.status, answer.body) == (206, whole[:end + 1])

        async def released() -> bool:
            return pool.get_size() - pool.get_idle_size() == 0

        await eventually(released, "the range's pooled connection to come back", timeout=SETTLE)
