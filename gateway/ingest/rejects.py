"""Every rejected row of an upload, stored with its line, reason and (capped) raw text.

Rows are gathered while the body streams and COPYed into ``upload_rejects`` in chunks of at most
``FLUSH_ROWS`` rows, in the upload's own transaction (a failed upload leaves none behind): the COPY of
valid rows into ``incoming`` pauses between two body chunks, the pending rejects are COPYed, and the
COPY of valid rows goes on. A body with no invalid row costs nothing here.

A segment keeps at most ``GATEWAY_REJECTS_MAX_PER_SEGMENT`` stored rejects, and an endpoint at most
``GATEWAY_REJECTS_MAX_PER_ENDPOINT`` over all its segments (over their uploads whose rejects have not
expired): beyond either an upload only counts them (``rejects_not_stored`` in its history row). The room
is read once per upload, at its first rejected row, so uploads that stream at the same time may each fill
what was free: a cap can be passed by what they store together (by at most their own rejects each).
"""

from __future__ import annotations

import asyncpg

from gateway.db.queries import QUERIES

RAW_LIMIT = 1024  # characters of a rejected row's text that are kept
TRUNCATED = "…[truncated]"  # appended to a raw text that was cut
FLUSH_ROWS = 10_000
COLUMNS = ("upload_id", "line", "reason", "raw")
CSV_HEADER = ("line", "reason", "raw")
REJECTS_QUERY = QUERIES["upload_rejects_rows"]  # one upload's stored rejected rows ($1: its id), as CSV_HEADER
SHARE_CSV_HEADER = (*CSV_HEADER, "upload")  # the rejects of several uploads say whose they are
# a share's stored rejected rows ($1 segment, $2 replace session or $3 sourceSegmentID), as SHARE_CSV_HEADER
SHARE_REJECTS_QUERY = QUERIES["upload_share_rejects_rows"]


def clean_raw(text: str) -> str:
    """A row's text as stored: without its line ending, cut at RAW_LIMIT characters (marked), and what
    PostgreSQL text cannot hold (invalid UTF-8 bytes, NUL) shown as U+FFFD."""
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if len(text) > RAW_LIMIT:
        text = text[:RAW_LIMIT] + TRUNCATED
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "\ufffd")


class RejectSink:
    """The rejected rows of one upload on their way to ``upload_rejects``."""

    def __init__(self, segment_id: int, endpoint_id: int, *, max_per_segment: int, max_per_endpoint: int) -> None:
        self._segment_id = segment_id
        self._endpoint_id = endpoint_id
        self._max_per_segment = max_per_segment
        self._max_per_endpoint = max_per_endpoint
        self._pending: list[tuple[int, str, str]] = []
        self._room: int | None = None  # unknown until the first flush
        self.upload_id: int | None = None  # taken at the first flush (the history row uses it)
        self.stored = 0
        self.not_stored = 0

    def add(self, line: int, reason: str, raw: str) -> None:
        if self._room == 0:
            self.not_stored += 1  # the segment or its endpoint is full: count it, keep nothing
            return
        self._pending.append((line, reason, clean_raw(raw)))

    def full(self) -> bool:
        """Whether the rows gathered so far should be stored before more of the body is read."""
        return len(self._pending) >= FLUSH_ROWS

    async def flush(self, conn: asyncpg.Connection) -> None:
        """COPY the gathered rows (what fits under both caps) in the caller's transaction."""
        if not self._pending:
            return
        if self.upload_id is None:
            reserved = await conn.fetchrow(QUERIES["upload_reserve"], self._segment_id, self._endpoint_id)
            self.upload_id = reserved["id"]
            self._room = max(0, min(self._max_per_segment - reserved["segment_rejects"],
                                    self._max_per_endpoint - reserved["endpoint_rejects"]))
        assert self._room is not None
        pending, self._pending = self._pending, []
        keep = pending[:self._room]
        self._room -= len(keep)
        self.stored += len(keep)
        self.not_stored += len(pending) - len(keep)
        if keep:
            upload_id = self.upload_id
            await conn.copy_records_to_table(
                "upload_rejects", columns=COLUMNS,
                records=((upload_id, *row) for row in keep))
