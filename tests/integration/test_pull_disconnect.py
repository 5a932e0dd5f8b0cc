"""A client that hangs up in the middle of a large download (sync GET or job data): the COPY behind it
stops, every pooled connection comes back within seconds, and the gateway goes on serving.

aiohttp's test server cancels a handler whose client went away (``handler_cancellation=True``);
``audience-gateway serve`` runs a plain ``AppRunner``, where that is off and only the failing writes can
tell the handler. Both are tested.
"""

import asyncio
import dataclasses
import socket

import pytest
from aiohttp.test_utils import TestServer

from gateway import state
from gateway.app import create_app
from tests.conftest import ADMIN_KEY
from tests.integration.pull_helpers import HEADER, create_job, download, eventually, sync_get, wait_for_status
from tests.integration.push_helpers import create_segment, csv_body, push_ok

ROWS = 200_000
ACTIVE_EXPORT_COPY = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND state = 'active' AND query ILIKE 'COPY (SELECT%'")


async def large_body(rows: int = ROWS, per_chunk: int = 10_000):
    """``email,name`` rows, generated chunk by chunk (~70 bytes a row)."""
    yield csv_body(HEADER, [])
    for start in range(0, rows, per_chunk):
        yield "".join(f"member{i:07d}@example.com,Someone with a long enough name {i}\n"
                      for i in range(start, min(rows, start + per_chunk))).encode()


async def slow_download(client, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """GET ``path`` on a raw socket with a small receive buffer (so the server's writes soon wait for us);
    the reader, the writer and the first 4 KiB received (which start with a 200 status line)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.server.host, client.server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {client.server.host}:{client.server.port}\r\n"
                 f"Authorization: Bearer {ADMIN_KEY}\r\nAccept-Encoding: identity\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readexactly(4096)
    assert head.startswith(b"HTTP/1.1 200 "), head[:200]
    return reader, writer, head


async def hang_up_mid_download(client, db, path: str, copies: bool = True) -> None:
    """Start a slow download of ``path``, read a few KB, and close while the export's COPY is still
    running (the server is held back by the unread response); a job's download (``copies`` False) is sent
    from its file: closed after those few KB."""
    reader, writer, _ = await slow_download(client, path)
    try:
        await reader.readexactly(4096)
        if not copies:
            return

        async def copy_running() -> bool:
            return await db.fetchval(ACTIVE_EXPORT_COPY) == 1

        await eventually(copy_running, "the export's COPY to be running (held back by the unread response)")
    finally:
        writer.close()
        await writer.wait_closed()


async def assert_all_released(client, db) -> None:
    pool = client.app[state.POOL]

    async def released() -> bool:
        return pool.get_size() - pool.get_idle_size() == 0 and await db.fetchval(ACTIVE_EXPORT_COPY) == 0

    await eventually(released, "the export's COPY to stop and its pooled connection to come back", timeout=5.0)


class ServedLikeServe(TestServer):
    """A test server whose runner is configured as ``audience-gateway serve`` configures it: aiohttp's
    default ``handler_cancellation=False``."""

    async def _make_runner(self, **kwargs):
        return await super()._make_runner(**{**kwargs, "handler_cancellation": False})


@pytest.mark.parametrize("server", ["like-serve", "aiohttp-test-server"])
async def test_hanging_up_mid_download_releases_everything(aiohttp_client, settings, db, server):
    app = create_app(dataclasses.replace(settings, sync_export_max_rows=ROWS))
    client = await aiohttp_client(ServedLikeServe(app) if server == "like-serve" else app)
    segment_id = await create_segment(client, "large")
    assert (await push_ok(client, segment_id, large_body()))["numAdded"] == str(ROWS)
    job = await create_job(client, segment_id)
    await wait_for_status(client, job, "complete")

    stored = await db.fetchval("SELECT data_bytes FROM jobs WHERE id = $1", job.id)  # the file's, at completion
    for path, read_whole, copies in ((f"/v1/segments/{segment_id}/data", lambda: sync_get(client, segment_id), True),
                                     (job.data_path, lambda: download(client, job), False)):
        await hang_up_mid_download(client, db, path, copies)
        await assert_all_released(client, db)
        whole = await read_whole()
        header, rows = whole.table()  # and it still serves, the whole export
        assert (header, len(rows), len({row[0] for row in rows})) == (HEADER, ROWS, ROWS)
    assert stored == len(whole.body)
