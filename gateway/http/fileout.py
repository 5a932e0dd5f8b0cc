"""A job's download served from its snapshot file: the same headers and byte ranges as a streamed static
CSV (gateway.http.csvout). The body goes in pieces, each bounded by the client idle timeout: sent by the
kernel (``loop.sendfile``) where the event loop has it, else (uvloop has none; gzip when the client asks and
sends no Range) read in a thread and written (as aiohttp's FileResponse falls back)."""

from __future__ import annotations

import asyncio
from typing import BinaryIO

from aiohttp import web

from gateway import state
from gateway.http.clients import write_or_cut
from gateway.http.csvout import CSV_CONTENT_TYPE, asks_compression
from gateway.http.ranges import requested_range

PIECE_BYTES = 1 << 20  # one piece: the client must take it within the idle timeout


async def send_csv_file(request: web.Request, file: BinaryIO, length: int, etag: str, *,
                        filename: str) -> web.StreamResponse:
    """Answer 200 with the file (gzip if the client asks and sends no Range), or 206 for one byte range
    (416 if it cannot be satisfied); strong ``etag``, ``Accept-Ranges`` and ``Content-Length`` unless gzip."""
    response = web.StreamResponse(headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    response.content_type = CSV_CONTENT_TYPE
    response.charset = "utf-8"
    wanted = requested_range(request.headers, etag, length)
    compress = wanted is None and asks_compression(request)
    start, count = (wanted.start, wanted.length) if wanted is not None else (0, length)
    if not compress:
        response.headers.update({"Accept-Ranges": "bytes", "ETag": etag})
        response.content_length = count
        if wanted is not None:
            response.set_status(206)
            response.headers["Content-Range"] = wanted.content_range(length)
    if request.method == "HEAD":
        await response.prepare(request)
        await response.write_eof()
        return response
    idle_timeout = request.app[state.SETTINGS].client_idle_timeout
    if compress:
        response.enable_compression()
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    position, end = start, start + count
    kernel = not compress
    while position < end:
        size = min(PIECE_BYTES, end - position)
        if kernel:
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("the client went away")
            try:
                await write_or_cut(request, idle_timeout, loop.sendfile(transport, file, position, size))
            except NotImplementedError:
                kernel = False
                continue
        else:
            block = await asyncio.to_thread(_read, file, position, size)
            await write_or_cut(request, idle_timeout, response.write(block))
        position += size
    await write_or_cut(request, idle_timeout, response.write_eof())
    return response


def _read(file: BinaryIO, position: int, size: int) -> bytes:
    file.seek(position)
    return file.read(size)
