"""CSV out of PostgreSQL: ``COPY (SELECT …) TO STDOUT`` handed chunk by chunk to a sink, the header row
quoted as PostgreSQL quotes the rows, and the exact length of such a CSV. gateway.http.csvout streams it
into an answer; the export jobs measure it."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import asyncpg

from gateway.db.queries import QUERIES


class Counted:
    """Counts the bytes written, passing them on to ``write`` if given."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]] | None = None) -> None:
        self._write = write
        self.bytes = 0

    async def write(self, data: bytes) -> None:
        self.bytes += len(data)
        if self._write is not None:
            await self._write(data)


async def scan_in_order(conn: asyncpg.Connection) -> None:
    """Make this transaction read a table in one fixed order: the same bytes on every copy of the same rows."""
    await conn.execute(QUERIES["export_job_scan_in_order"])


def columns_sql(width: int) -> str:
    """``attrs[1], …, attrs[width]``: one CSV column per attribute (a shorter array gives empty fields)."""
    return ", ".join(f"attrs[{i}]" for i in range(1, width + 1)) if width else "NULL"


def header_line(attributes: Sequence[str]) -> bytes:
    """The header row, quoted exactly as PostgreSQL's CSV output quotes the data rows."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(attributes)
    return out.getvalue().encode()


def columns_at(positions: Sequence[int]) -> str:
    """``attrs[i], attrs[j], …``: one column per attribute position (1-based), in the order given."""
    return ", ".join(f"attrs[{int(i)}]" for i in positions) if positions else "NULL"


# COPY options that pass each row's single text value through as it is, then a newline: no JSON text holds
# these control characters (json escapes them), so CSV never quotes a value.
VERBATIM = {"delimiter": "\x02", "quote": "\x01"}


async def copy_csv_out(conn: asyncpg.Connection, query: str, sink: Callable[[bytes], Awaitable[None]],
                       args: Sequence[object] = (), *, verbatim: bool = False) -> str:
    """``COPY (query) TO STDOUT`` as CSV (``verbatim``: see VERBATIM), each chunk handed to ``sink``; a sink
    that raises stops the COPY. Returns the command's status (``COPY <rows>``).

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

    options = VERBATIM if verbatim else {}
    try:
        return await conn.copy_from_query(query, *args, output=guarded, format="csv", **options)
    except BaseException:
        if stopped:
            conn.terminate()
        raise


@asynccontextmanager
async def streaming_transaction(conn: asyncpg.Connection, isolation: str | None = None) -> AsyncIterator[None]:
    """A transaction (of that ``isolation`` level, default the server's) around a streamed answer: committed
    when the block ends normally, rolled back when it raises, and simply over when ``copy_csv_out`` had to
    terminate the connection."""
    transaction = conn.transaction(isolation=isolation)
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
    counted = Counted()
    await counted.write(header_line(attributes))
    await copy_csv_out(conn, query, counted.write, args)
    return counted.bytes
