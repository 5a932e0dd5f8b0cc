"""Streaming CSV out: ``COPY (SELECT …) TO STDOUT`` relayed chunk by chunk into a chunked response.

Memory stays constant for any size: asyncpg hands each chunk to ``write``, which awaits the client
(back-pressure all the way to PostgreSQL). If the client goes away, or reads nothing for
``GATEWAY_CLIENT_IDLE_TIMEOUT`` (gateway.http.clients cuts it), the write raises, asyncpg cancels the COPY on the
server, and the connection goes back to the pool.

A COPY that its sink stops (the client went away, a byte range is complete, a write timed out) closes
its connection instead of returning it to the pool: see ``gateway.db.csvcopy.copy_csv_out``.

A job's download is the same bytes every time (a static snapshot scanned in a fixed order): it has a
strong ``ETag`` and ``Accept-Ranges: bytes``, and its exact length is learnt lazily. A full download that
streams to its end reports the bytes it sent (``StaticCsv.remember_length``); later ones then carry
``Content-Length``. A single byte range needs the length first (the caller measures it with
``gateway.db.csvcopy.csv_length`` when it is not known yet) and is served as 206 (``gateway.http.ranges``):
the COPY runs from the
start, bytes before the range are dropped, and it is cancelled once the range is sent. A compressed answer
(the client asked for gzip and no range) offers no ranges: they would be over the gzip bytes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg
from aiohttp import web

from gateway import state
from gateway.db.csvcopy import Counted, copy_csv_out, header_line
from gateway.http.clients import idle_writer, write_or_cut
from gateway.http.ranges import RangeSent, RangeWriter, requested_range

log = logging.getLogger(__name__)

CSV_CONTENT_TYPE = "text/csv"


@dataclasses.dataclass(frozen=True)
class StaticCsv:
    """A CSV answer that is the same bytes on every request, named by a strong ETag. ``length`` (header row
    included) is None until known; a full download that streamed to its end passes the bytes it sent to
    ``remember_length``."""

    etag: str  # quoted, strong
    length: int | None
    remember_length: Callable[[int], Awaitable[None]]


def asks_compression(request: web.Request) -> bool:
    """What ``enable_compression()`` looks for in Accept-Encoding."""
    accepted = request.headers.get("Accept-Encoding", "").lower()
    return "gzip" in accepted or "deflate" in accepted


async def stream_csv(request: web.Request, conn: asyncpg.Connection, query: str,
                     attributes: Sequence[str], *, filename: str, args: Sequence[object] = (),
                     static: StaticCsv | None = None,
                     headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    """Answer 200 with the header row, then every row the query (with ``args``) yields, as CSV (gzip if the
    client asks); with ``static``, 206 for a byte range (416 if it cannot be satisfied) once its length is
    known: a range asked for while it is not is ignored, so the caller measures it first."""
    response = web.StreamResponse(headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                           **(headers or {})})
    response.content_type = CSV_CONTENT_TYPE
    response.charset = "utf-8"
    length = static.length if static is not None else None
    wanted = requested_range(request.headers, static.etag, length) if static and length is not None else None
    if static is not None and (wanted is not None or not asks_compression(request)):
        response.headers.update({"Accept-Ranges": "bytes", "ETag": static.etag})
        if length is not None:
            response.content_length = length
        if wanted is not None:
            response.set_status(206)
            response.headers["Content-Range"] = wanted.content_range(length)
            response.content_length = wanted.length
    if request.method == "HEAD":  # the headers a GET would get, and no body (nor any COPY)
        await response.prepare(request)
        await response.write_eof()
        return response
    if wanted is None:
        response.enable_compression()  # only when the request's Accept-Encoding names gzip or deflate
    await response.prepare(request)
    idle_timeout = request.app[state.SETTINGS].client_idle_timeout
    # counts the uncompressed bytes, gzip or not; a client that reads nothing for the idle timeout is cut
    whole = Counted(idle_writer(request, response.write, idle_timeout))
    write = whole.write if wanted is None else RangeWriter(response.write, wanted, length).write
    try:
        await write(header_line(attributes))
        await copy_csv_out(conn, query, write, args)
    except RangeSent:
        pass  # asyncpg has cancelled the rest of the COPY
    await write_or_cut(request, idle_timeout, response.write_eof())
    if static is not None and length is None and wanted is None:  # streamed to its end: now it is known
        await static.remember_length(whole.bytes)
    return response
