"""``GET /v1/segments`` from each process's cache (gateway.audience.segment_lists): answered without the
database while it is busy, changed at once in the process that made the change, by NOTIFY in the others,
and read from the database while the change listener is down."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import asyncpg

from gateway import state
from gateway.app import create_app
from gateway.audience.metadata import change_segment
from gateway.audience.segment_lists import LISTENER_NAME
from tests.conftest import AUTH, GatewayTestServer
from tests.helpers import eventually

ANSWER_BOUND = 5.0  # a cached list answers at once; a read waiting for the lock would wait for ever
LONG_TTL = 3600.0  # so that only a NOTIFY (never the TTL) can make a process see a change


async def listed(client) -> dict[str, str]:
    """The list as ``{id: name}`` (ids as text, as POST answers them)."""
    response = await client.get("/v1/segments", headers=AUTH)
    assert response.status == 200
    return {str(item["id"]): item["name"] for item in (await response.json())["result"]["list"]}


async def create(client, name: str) -> str:
    response = await client.post("/v1/segments", json={"name": name}, headers=AUTH)
    assert response.status == 200
    return (await response.json())["result"]["segmentId"]


async def patch(client, segment_id: str, changes: dict) -> None:
    response = await client.patch(f"/api/segments/{segment_id}", json=changes, headers=AUTH)
    assert response.status == 200, await response.text()


async def listening(*clients) -> None:
    async def all_listening() -> bool:
        return all(client.app[state.SEGMENT_LISTS].listening for client in clients)
    await eventually(all_listening, "the segment-list listeners to connect")


@asynccontextmanager
async def segments_locked(database_url: str) -> AsyncIterator[None]:
    """No one reads the segments table meanwhile: a query of it waits until the block ends."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE segments IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


@asynccontextmanager
async def deaf(db) -> AsyncIterator[None]:
    """The segment-list listeners hear nothing meanwhile: their backends are stopped, their connections stay
    open (a half-open connection, noticed by the listener's ping only after seconds)."""
    pids = [row["pid"] for row in await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        LISTENER_NAME)]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def two_gateways(aiohttp_client, settings):
    first = await aiohttp_client(GatewayTestServer(create_app(settings)))
    second = await aiohttp_client(GatewayTestServer(create_app(settings)))
    await listening(first, second)
    for client in (first, second):
        client.app[state.SEGMENT_LISTS].ttl = LONG_TTL
    return first, second


async def test_the_list_is_answered_while_the_database_could_not_answer_it(client, database_url):
    await listening(client)
    segment_id = await create(client, "cached")
    assert await listed(client) == {segment_id: "cached"}
    async with segments_locked(database_url):
        async with asyncio.timeout(ANSWER_BOUND):
            assert await listed(client) == {segment_id: "cached"}


async def test_a_change_is_in_the_next_list_of_its_own_process_and_reaches_the_other(aiohttp_client, settings):
    first, second = await two_gateways(aiohttp_client, settings)
    kept, renamed = await create(first, "kept"), await create(first, "old name")
    for client in (first, second):
        assert await listed(client) == {kept: "kept", renamed: "old name"}  # now cached in both

    async def second_lists(expected: dict[str, str]):
        async def check() -> bool:
            return await listed(second) == expected
        await eventually(check, f"the other process to list {expected}", timeout=ANSWER_BOUND)

    await patch(first, renamed, {"name": "new name"})
    assert await listed(first) == {kept: "kept", renamed: "new name"}  # read-your-writes: no waiting
    await second_lists({kept: "kept", renamed: "new name"})

    await patch(first, renamed, {"status": "inactive"})
    assert await listed(first) == {kept: "kept"}
    await second_lists({kept: "kept"})

    assert (await first.delete(f"/api/segments/{kept}", headers=AUTH)).status == 200
    assert await listed(first) == {}
    await second_lists({})

    await patch(first, renamed, {"status": "active"})
    added = await create(second, "added by the second")
    assert await listed(second) == {renamed: "new name", added: "added by the second"}
    assert await listed(first) in ({renamed: "new name"}, {renamed: "new name", added: "added by the second"})

    async def first_has_it() -> bool:
        return added in await listed(first)
    await eventually(first_has_it, "the first process to list the second's segment", timeout=ANSWER_BOUND)


async def test_a_change_is_in_the_next_list_of_its_own_process_without_its_notification(client, db):
    client.app[state.SEGMENT_LISTS].ttl = LONG_TTL
    await listening(client)
    segment_id = await create(client, "old name")
    assert await listed(client) == {segment_id: "old name"}  # cached
    async with deaf(db):
        await patch(client, segment_id, {"name": "new name"})
        assert await listed(client) == {segment_id: "new name"}
        added = await create(client, "added")
        assert await listed(client) == {segment_id: "new name", added: "added"}
        assert (await client.delete(f"/api/segments/{segment_id}", headers=AUTH)).status == 200
        assert await listed(client) == {added: "added"}


async def test_a_change_by_another_program_reaches_every_process(aiohttp_client, settings, db):
    first, second = await two_gateways(aiohttp_client, settings)
    segment_id = await create(first, "before")
    for client in (first, second):
        assert await listed(client) == {segment_id: "before"}
    await change_segment(db, int(segment_id), None, {"name": "after"})  # as `audience-gateway segments` does

    async def both_renamed() -> bool:
        return [await listed(client) for client in (first, second)] == [{segment_id: "after"}] * 2
    await eventually(both_renamed, "both processes to list the new name", timeout=ANSWER_BOUND)


async def test_while_the_listener_is_down_the_list_is_read_from_the_database(client, db, database_url):
    lists = client.app[state.SEGMENT_LISTS]
    lists.ttl = LONG_TTL
    await listening(client)
    segment_id = await create(client, "first name")
    assert await listed(client) == {segment_id: "first name"}  # cached
    url = lists.listener.url
    lists.listener.url = "postgresql://nobody@127.0.0.1:1/none"  # its reconnections fail until restored
    assert await db.fetchval("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 "
                             "AND datname = current_database()", LISTENER_NAME)

    async def down() -> bool:
        return not lists.listening
    await eventually(down, "the listener to notice its connection is gone")
    for name in ("second name", "third name"):  # no NOTIFY is heard: only the database knows
        await change_segment(db, int(segment_id), None, {"name": name})
        assert await listed(client) == {segment_id: name}

    lists.listener.url = url
    await listening(client)
    assert await listed(client) == {segment_id: "third name"}
    async with segments_locked(database_url):  # cached again
        async with asyncio.timeout(ANSWER_BOUND):
            assert await listed(client) == {segment_id: "third name"}
