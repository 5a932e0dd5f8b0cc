"""Slow and hostile clients (gateway.http.clients): twice as many stalled uploads, or stalled downloads, as the
pool has connections leave another tenant's calls answering within a second; a client that sends or reads
nothing for GATEWAY_CLIENT_IDLE_TIMEOUT is cut (a stalled upload applies nothing); a slow but steady one is
not.

The stalled clients are raw sockets: an upload sends its headers and the first rows of a longer body, then
nothing; a download (small receive buffer) sends its request and reads nothing but the response's head, so
the server's writes really block (the handler, holding its data slot, waits on them).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from gateway import state
from tests.conftest import ADMIN_KEY, AUTH
from tests.integration.pull_helpers import eventually, sync_get
from tests.integration.push_helpers import app_client, chunked, create_segment, push, push_ok, raw_members
from tests.integration.test_pull_disconnect import ACTIVE_EXPORT_COPY, large_body

POOL = 4
SLOTS = 2  # the default for POOL connections and one export worker: POOL - 1 - 1
STALLED = 2 * POOL
ROWS = 100_000  # ~7 MB of CSV: far more than the socket buffers hold
FAST = 1.0  # seconds: another tenant's calls answer within this


async def gateway(aiohttp_client, settings, idle: float, **changes):
    return await app_client(aiohttp_client, settings, pool_max_size=POOL, export_workers=1, data_slot_wait=0.5,
                            client_idle_timeout=idle, sync_export_max_rows=ROWS, **changes)


async def open_raw(client, receive_buffer: int | None = None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.server.host, client.server.port))
    return await asyncio.open_connection(sock=sock)


def request_head(client, method: str, path: str, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {client.server.host}:{client.server.port}",
             f"Authorization: Bearer {ADMIN_KEY}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in head[1:] if line)
    return int(head[0].split()[1]), {name.strip().lower(): value.strip() for name, _, value in fields}


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], dict]:
    """A JSON answer on a raw socket: status, headers, body."""
    status, headers = await read_head(reader)
    return status, headers, json.loads(await reader.readexactly(int(headers["content-length"])))


async def stalled_upload(client, segment_id: str):
    """A push whose body stops after its first rows (its Content-Length promises much more)."""
    reader, writer = await open_raw(client)
    writer.write(request_head(client, "POST", f"/v1/segments/{segment_id}/data", "Content-Type: text/csv",
                              "Content-Length: 1000000") + b"email,name\nstalled@example.com,Stalled\n")
    await writer.drain()
    return reader, writer


async def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = await call
    return time.perf_counter() - started, result


async def assert_others_answer(client, other_tenant: dict[str, str]) -> None:
    """Another tenant's first call (so its key is looked up in the database), a key lookup of the admin
    key's tenant's list, and /readyz: each within FAST."""
    seconds, response = await timed(client.get("/v1/segments", headers=other_tenant))
    assert response.status == 200 and (await response.json())["result"]["totalCount"] == 0
    assert seconds < FAST, f"another tenant's GET /v1/segments took {seconds:.2f} s"
    client.app[state.KEYS].clear()  # the next call looks its key up again
    seconds, response = await timed(client.get("/v1/segments", headers=AUTH))
    assert response.status == 200 and seconds < FAST, (response.status, seconds)
    seconds, response = await timed(client.get("/readyz"))
    assert response.status == 200 and seconds < FAST, (response.status, seconds)


async def all_connections_back(client) -> None:
    pool = client.app[state.POOL]

    async def back() -> bool:
        return pool.get_size() == pool.get_idle_size() and client.app[state.DATA_SLOTS].in_use == 0

    await eventually(back, "every pooled connection and data slot to come back")


def close_all(sockets) -> None:
    for _reader, writer in sockets:
        writer.close()


async def test_stalled_uploads_hold_only_the_data_slots_and_are_cut_with_nothing_applied(
        aiohttp_client, settings, db, make_key):
    client = await gateway(aiohttp_client, settings, idle=3.0)
    segment_id = await create_segment(client)
    other_tenant = await make_key("read", endpoint="other")
    slots = client.app[state.DATA_SLOTS]
    assert slots.count == SLOTS
    sockets = [await stalled_upload(client, segment_id) for _ in range(STALLED)]
    try:
        answers = [asyncio.create_task(read_answer(reader)) for reader, _ in sockets]
        # the uploads beyond the slots wait GATEWAY_DATA_SLOT_WAIT, then 503 server_busy with Retry-After
        async def refused() -> bool:
            return sum(task.done() for task in answers) == STALLED - SLOTS

        await eventually(refused, "the uploads beyond the data slots to be refused")
        for task in (task for task in answers if task.done()):
            status, headers, body = task.result()
            assert (status, body["error"]["code"], headers["retry-after"]) == (503, "server_busy", "1"), body
        assert slots.in_use == SLOTS  # the others stream into COPY, stalled

        await assert_others_answer(client, other_tenant)
        assert slots.in_use == SLOTS  # still stalled while the others answered

        # after GATEWAY_CLIENT_IDLE_TIMEOUT without a byte, the stalled ones are cut: 408, nothing applied
        stalled = [task for task in answers if not task.done()]
        cut = [await asyncio.wait_for(task, 10) for task in stalled]
        assert [(status, body["error"]["code"]) for status, _, body in cut] == [(408, "client_idle")] * SLOTS
        assert all(headers.get("connection", "").lower() == "close" for _, headers, _ in cut)
    finally:
        close_all(sockets)
    await all_connections_back(client)
    assert await raw_members(db, segment_id) == {}
    assert await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment_id)) == 0
    assert await db.fetchval("SELECT count(*) FROM uploads") == 0


async def test_stalled_downloads_hold_only_the_data_slots_and_are_cut(aiohttp_client, settings, db, make_key):
    client = await gateway(aiohttp_client, settings, idle=3.0)
    segment_id = await create_segment(client, "large")
    assert (await push_ok(client, segment_id, large_body(ROWS)))["numAdded"] == str(ROWS)
    other_tenant = await make_key("read", endpoint="other")
    sockets = []
    try:
        for _ in range(STALLED):
            reader, writer = await open_raw(client, receive_buffer=16 * 1024)
            writer.write(request_head(client, "GET", f"/v1/segments/{segment_id}/data", "Accept-Encoding: identity"))
            await writer.drain()
            sockets.append((reader, writer))
        heads = await asyncio.wait_for(asyncio.gather(*(read_head(reader) for reader, _ in sockets)), 10)
        assert sorted(status for status, _ in heads) == [200] * SLOTS + [503] * (STALLED - SLOTS)
        assert all(headers["retry-after"] == "1" for status, headers in heads if status == 503)

        async def copies() -> int:
            return await db.fetchval(ACTIVE_EXPORT_COPY)

        await assert_others_answer(client, other_tenant)
        # the two downloads still hold their slots: the unread answers hold the server's writes back
        assert client.app[state.DATA_SLOTS].in_use == SLOTS

        # after GATEWAY_CLIENT_IDLE_TIMEOUT without a byte read, the downloads are cut and their COPYs end
        await all_connections_back(client)
        assert await copies() == 0
        for (reader, _), (status, _) in zip(sockets, heads):
            if status == 200:
                with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                    await asyncio.wait_for(reader.readexactly(100 * 1024 * 1024), 10)
    finally:
        close_all(sockets)


async def test_silent_clients_are_cut_after_the_idle_timeout(aiohttp_client, settings):
    client = await gateway(aiohttp_client, settings, idle=1.0)
    silent_from_the_start = await open_raw(client)
    half_a_head = await open_raw(client)
    half_a_head[1].write(b"GET /v1/segments HTTP/1.1\r\nHost: x\r\n")
    half_a_json_body = await open_raw(client)
    half_a_json_body[1].write(request_head(client, "POST", "/v1/segments", "Content-Type: application/json",
                                           "Content-Length: 100") + b'{"name": "nev')
    try:
        for reader, _ in (silent_from_the_start, half_a_head):
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        status, headers, body = await asyncio.wait_for(read_answer(half_a_json_body[0]), 5)
        assert (status, body["error"]["code"]) == (408, "client_idle")
    finally:
        close_all([silent_from_the_start, half_a_head, half_a_json_body])
    assert (await (await client.get("/v1/segments", headers=AUTH)).json())["result"]["totalCount"] == 0


async def test_a_slow_but_steady_client_is_not_cut(aiohttp_client, settings, db):
    client = await gateway(aiohttp_client, settings, idle=1.0)
    # an upload that sends one row every quarter second, for three times the idle timeout
    segment_id = await create_segment(client)
    rows = [f"slow{i}@example.com,Slow {i}\n".encode() for i in range(12)]
    reply = await push(client, segment_id, chunked(b"email,name\n", *rows, pause=0.25))
    assert reply.counts["numAdded"] == "12"

    # a download read 16 KiB every tenth of a second for three times the idle timeout, then to its end
    large = await create_segment(client, "large")
    await push_ok(client, large, large_body(ROWS))
    reader, writer = await open_raw(client, receive_buffer=16 * 1024)
    try:
        writer.write(request_head(client, "GET", f"/v1/segments/{large}/data", "Accept-Encoding: identity",
                                  "Connection: close"))
        status, _ = await read_head(reader)
        assert status == 200
        received = bytearray()
        for _ in range(30):
            received += await reader.read(16 * 1024)
            await asyncio.sleep(0.1)
        assert client.app[state.DATA_SLOTS].in_use == 1  # the server's writes still wait for the client
        received += await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    whole = await sync_get(client, large)
    assert whole.status == 200 and dechunk(bytes(received)) == whole.body  # all of it


def dechunk(data: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 answer (to its last, empty chunk)."""
    body, at = bytearray(), 0
    while True:
        end = data.index(b"\r\n", at)
        size = int(data[at:end], 16)
        if size == 0:
            return bytes(body)
        body += data[end + 2:end + 2 + size]
        at = end + 2 + size + 2
