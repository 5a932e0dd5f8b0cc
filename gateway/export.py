"""Streaming CSV out: ``COPY (SELECT …) TO STDOUT`` relayed chunk by chunk into a chunked response.

Memory stays constant for any size: asyncpg hands each chunk to ``write``, which awaits the client
(back-pressure all the way to PostgreSQL). If the client goes away, or reads nothing for
``GATEWAY_CLIENT_IDLE_TIMEOUT`` (gateway.clients cuts it), the write raises, asyncpg cancels the COPY on the
server, and the connection goes back to the pool.

A COPY that its sink stops (the client went away, a byte range is complete, a write timed out) closes
its connection instead of returning it to the pool: see ``copy_csv_out``.

A job's download is the same bytes every time (a static snapshot scanned in a fixed order): it has a
strong ``ETag`` and ``Accept-Ranges: bytes``, and its exact length is learnt lazily. A full download that
streams to its end reports the bytes it sent (``StaticCsv.remember_length``); later ones then carry
``Content-Length``. A single byte range needs the length first (the caller measures it with
``csv_length`` when it is not known yet) and is served as 206 (``gateway.ranges``): the COPY runs from the
start, bytes before the range are dropped, and it is cancelled once the range is sent. A compressed answer
(the client asked for gzip and no range) offers no ranges: they would be over the gzip bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import asyncpg
from aiohttp import web

from gateway import state
from gateway.clients import idle_writer, write_or_cut
from gateway.ranges import RangeSent, RangeWriter, requested_range

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


class _Counted:
    """Counts the bytes written, passing them on to ``write`` if given."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]] | None = None) -> None:
        self._write = write
        self.bytes = 0

    async def write(self, data: bytes) -> None:
        self.bytes += len(data)
        if self._write is not None:
            await self._write(data)


def columns_sql(width: int) -> str:
    """``attrs[1], …, attrs[width]``: one CSV column per attribute (a shorter array gives empty fields)."""
    return ", ".join(f"attrs[{i}]" for i in range(1, width + 1)) if width else "NULL"


def header_line(attributes: Sequence[str]) -> bytes:
    """The header row, quoted exactly as PostgreSQL's CSV output quotes the data rows."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(attributes)
    return out.getvalue().encode()


async def copy_csv_out(conn: asyncpg.Connection, query: str, sink: Callable[[bytes], Awaitable[None]],
                       args: Sequence[object] = ()) -> None:
    """``COPY (query) TO STDOUT`` as CSV, each chunk handed to ``sink``; a sink that raises stops the COPY.

    When the sink raises, asyncpg asks the server to cancel the COPY and waits for the cancelled
    command's answer before the connection can run anything again (even a ROLLBACK, even its release to
    the pool). If the sink raised on the COPY's *last* chunk the command is already over, no answer ever
    comes, and the connection hangs for good (asyncpg 0.32). So a COPY stopped by its sink terminates its
    connection: the transaction ends with it on the server, and the pool replaces it.
    """
    stopped = False

    async def guarded(data: bytes) -> None:
        nonlocal stopped
        try:
            await sink(data)
        except BaseException:
            stopped = True
            raise

    try:
        await conn.copy_from_query(query, *args, output=guarded, format="csv")
    except BaseException:
        if stopped:
            conn.terminate()
        raise


@asynccontextmanager
async def streaming_transaction(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction around a streamed answer: committed when the block ends normally, rolled back when
    it raises, and simply over when ``copy_csv_out`` had to terminate the connection."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except BaseException:
        if not _terminated(conn):
            await transaction.rollback()
        raise
    if not _terminated(conn):
        await transaction.commit()


def _terminated(conn: asyncpg.Connection) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # a pool's proxy is detached once its connection is terminated
        return True


async def csv_length(conn: asyncpg.Connection, query: str, attributes: Sequence[str],
                     args: Sequence[object] = ()) -> int:
    """The exact bytes of ``stream_csv``'s uncompressed answer: one COPY of the query, counted and dropped."""
    counted = _Counted()
    await counted.write(header_line(attributes))
    await copy_csv_out(conn, query, counted.write, args)
    return counted.bytes


def _asks_compression(request: web.Request) -> bool:
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
    if static is not None and (wanted is not None or not _asks_compression(request)):
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
    whole = _Counted(idle_writer(request, response.write, idle_timeout))
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
