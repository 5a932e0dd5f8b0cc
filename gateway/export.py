"""Streaming CSV out: ``COPY (SELECT …) TO STDOUT`` relayed chunk by chunk into a chunked response.

Memory stays constant for any size: asyncpg hands each chunk to ``write``, which awaits the client
(back-pressure all the way to PostgreSQL). If the client goes away, the write raises, asyncpg cancels the
COPY on the server, and the connection goes back to the pool.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence

import asyncpg
from aiohttp import web

log = logging.getLogger(__name__)

CSV_CONTENT_TYPE = "text/csv"


def columns_sql(width: int) -> str:
    """``attrs[1], …, attrs[width]``: one CSV column per attribute (a shorter array gives empty fields)."""
    return ", ".join(f"attrs[{i}]" for i in range(1, width + 1)) if width else "NULL"


def header_line(attributes: Sequence[str]) -> bytes:
    """The header row, quoted exactly as PostgreSQL's CSV output quotes the data rows."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(attributes)
    return out.getvalue().encode()


async def stream_csv(request: web.Request, conn: asyncpg.Connection, query: str,
                     attributes: Sequence[str], *, filename: str, args: Sequence[object] = ()) -> web.StreamResponse:
    """Answer 200 with the header row, then every row the query (with ``args``) yields, as CSV (gzip if the
    client asks)."""
    response = web.StreamResponse(headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    response.content_type = CSV_CONTENT_TYPE
    response.charset = "utf-8"
    if request.method == "HEAD":  # the headers a GET would get, and no body (nor any COPY)
        await response.prepare(request)
        await response.write_eof()
        return response
    response.enable_compression()  # only when the request's Accept-Encoding names gzip or deflate
    await response.prepare(request)
    await response.write(header_line(attributes))
    await conn.copy_from_query(query, *args, output=response.write, format="csv")
    await response.write_eof()
    return response
