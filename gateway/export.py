"""Streaming CSV out: ``COPY (SELECT …) TO STDOUT`` relayed chunk by chunk into a chunked response.

Memory stays constant for any size: asyncpg hands each chunk to ``write``, which awaits the client
(back-pressure all the way to PostgreSQL). If the client goes away, the write raises, asyncpg cancels the
COPY on the server, and the connection goes back to the pool.

When the caller knows the exact length of the whole CSV (a job's static snapshot, scanned in a fixed
order), the identity answer has ``Content-Length``, ``ETag`` and ``Accept-Ranges: bytes``, and a single
byte range is served as 206 (``gateway.ranges``): the COPY runs from the start, bytes before the range are
dropped, and it is cancelled once the range is sent. A compressed answer (the client asked for gzip and
no range) offers no ranges: they would be over the gzip bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from collections.abc import Sequence

import asyncpg
from aiohttp import web

from gateway.ranges import RangeSent, RangeWriter, requested_range

log = logging.getLogger(__name__)

CSV_CONTENT_TYPE = "text/csv"


@dataclasses.dataclass(frozen=True)
class KnownLength:
    """The exact bytes of the whole CSV answer (header row included) and the ETag naming them."""

    length: int
    etag: str  # quoted, strong


def columns_sql(width: int) -> str:
    """``attrs[1], …, attrs[width]``: one CSV column per attribute (a shorter array gives empty fields)."""
    return ", ".join(f"attrs[{i}]" for i in range(1, width + 1)) if width else "NULL"


def header_line(attributes: Sequence[str]) -> bytes:
    """The header row, quoted exactly as PostgreSQL's CSV output quotes the data rows."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(attributes)
    return out.getvalue().encode()


def _asks_compression(request: web.Request) -> bool:
    """What ``enable_compression()`` looks for in Accept-Encoding."""
    accepted = request.headers.get("Accept-Encoding", "").lower()
    return "gzip" in accepted or "deflate" in accepted


async def stream_csv(request: web.Request, conn: asyncpg.Connection, query: str,
                     attributes: Sequence[str], *, filename: str, args: Sequence[object] = (),
                     known: KnownLength | None = None) -> web.StreamResponse:
    """Answer 200 with the header row, then every row the query (with ``args``) yields, as CSV (gzip if the
    client asks); with ``known``, 206 for a byte range (416 if it cannot be satisfied)."""
    response = web.StreamResponse(headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    response.content_type = CSV_CONTENT_TYPE
    response.charset = "utf-8"
    wanted = requested_range(request.headers, known.etag, known.length) if known is not None else None
    if known is not None and (wanted is not None or not _asks_compression(request)):
        response.headers.update({"Accept-Ranges": "bytes", "ETag": known.etag})
        response.content_length = known.length
        if wanted is not None:
            response.set_status(206)
            response.headers["Content-Range"] = wanted.content_range(known.length)
            response.content_length = wanted.length
    if request.method == "HEAD":  # the headers a GET would get, and no body (nor any COPY)
        await response.prepare(request)
        await response.write_eof()
        return response
    if wanted is None:
        response.enable_compression()  # only when the request's Accept-Encoding names gzip or deflate
    await response.prepare(request)
    write = response.write if wanted is None else RangeWriter(response.write, wanted, known.length).write
    try:
        await write(header_line(attributes))
        await conn.copy_from_query(query, *args, output=write, format="csv")
    except RangeSent:
        pass  # asyncpg has cancelled the rest of the COPY
    await response.write_eof()
    return response
