"""The LISTEN helper (gateway.db.listen): a connection closed or frozen under it is replaced, and the
caller hears notifications sent afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from gateway.db.listen import Listener
from tests.helpers import eventually

CHANNEL = "audience_gateway_test_listen"
NAME = "audience-gateway listen test"
PING_SECONDS = 0.1
PING_TIMEOUT = 0.5
RECONNECT_BOUND = 3.0  # a ping period, its timeout, the first reconnection delay, and room for a busy machine


class Heard:
    """What a listener told its caller: the payloads, and how many times it (re)connected."""

    def __init__(self) -> None:
        self.payloads: asyncio.Queue[str] = asyncio.Queue()
        self.connections = 0

    def connected(self) -> None:
        self.connections += 1

    def connected_times(self, times: int):
        async def check() -> bool:
            return self.connections == times
        return check


@pytest.fixture
async def listening(database_url) -> AsyncIterator[tuple[Listener, Heard]]:
    heard = Heard()
    listener = Listener(database_url, CHANNEL, NAME, heard.payloads.put_nowait, on_connect=heard.connected,
                        ping_seconds=PING_SECONDS, ping_timeout=PING_TIMEOUT)
    task = asyncio.create_task(listener.run())
    try:
        await eventually(heard.connected_times(1), "the listener to connect")
        yield listener, heard
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def listener_pid(db) -> int | None:
    return await db.fetchval("SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                             "AND datname = current_database()", NAME)


async def assert_hears(db, heard: Heard, payload: str) -> None:
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    assert await asyncio.wait_for(heard.payloads.get(), 5) == payload


async def test_a_listener_whose_backend_stops_answering_reconnects_and_hears_what_follows(listening, db):
    listener, heard = listening
    await assert_hears(db, heard, "before")
    frozen = await listener_pid(db)
    os.kill(frozen, signal.SIGSTOP)  # half-open: the socket stays open, nothing answers
    try:
        started = time.monotonic()
        await eventually(heard.connected_times(2), "the listener to reconnect", timeout=10)
        assert time.monotonic() - started < RECONNECT_BOUND
        assert listener.connected
        await assert_hears(db, heard, "after")
        assert await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                                 "AND pid <> $2 AND datname = current_database()", NAME, frozen) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)


async def test_a_listener_whose_connection_is_closed_reconnects_and_hears_what_follows(listening, db):
    listener, heard = listening
    assert await db.fetchval("SELECT pg_terminate_backend($1)", await listener_pid(db))
    await eventually(heard.connected_times(2), "the listener to reconnect")
    await assert_hears(db, heard, "after")
