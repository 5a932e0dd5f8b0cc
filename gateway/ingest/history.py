"""Upload history: one row per applied batch (ADD, REMOVE, a REPLACE batch that staged or committed),
written in the batch's own transaction so that history never lies.

The row is written by the statement that already ends the batch (``segment_record_upload`` for ADD and
REMOVE, ``replace_touch`` for REPLACE), through the SQL function ``record_upload(jsonb)``: recording it
costs no round trip. Requests refused before their batch is applied (4xx, a lost connection) leave no
row, like they leave no data.
"""

from __future__ import annotations

import dataclasses
import enum
import datetime as dt
import time
from typing import Any

import asyncpg
import orjson

from gateway.errors import NotFound
from gateway.ingest.upload import Upload
from gateway.ingest.rejects import RejectSink
from gateway.db.queries import QUERIES

SWEEP_BATCH = 1000  # uploads whose rejects one sweep statement drops
_COUNTS = {"numReceived": "num_received", "numInvalid": "num_invalid", "numAdded": "num_added",
           "numRemoved": "num_removed"}


class Operation(enum.Enum):
    ADD = "ADD"
    REPLACE = "REPLACE"
    REMOVE = "REMOVE"


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """Where a batch sits in its share (query parameters; T = k = 1 when absent)."""

    total: int = 1
    number: int = 1
    ids: str = ""
    source_endpoint_id: str = ""
    source_segment_id: str = ""
    category: str = ""


@dataclasses.dataclass
class UploadEntry:
    """What the history row of one batch says, gathered while it is applied."""

    segment_id: int
    operation: Operation
    batch: BatchInfo
    request_id: str
    upload: Upload
    rejects: RejectSink
    started_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def row(self, counts: dict[str, Any]) -> str:
        """The ``record_upload`` argument. ``counts`` are result fields (numAdded, …; numReceived and
        numInvalid default to the upload's)."""
        counts = {"numReceived": self.upload.received, "numInvalid": self.upload.invalid, **counts}
        row: dict[str, Any] = {column: None if counts.get(key) is None else int(counts[key])
                               for key, column in _COUNTS.items()}
        row.update({
            "id": self.rejects.upload_id, "segment_id": self.segment_id, "method": self.operation.value,
            "total_batches": self.batch.total, "batch_number": self.batch.number, "replace_session_id": None,
            "replace_committed": None, "first_line": self.upload.first_line,
            "rejects_stored": self.rejects.stored, "rejects_not_stored": self.rejects.not_stored,
            "ids": self.batch.ids, "category": self.batch.category,
            "source_endpoint_id": self.batch.source_endpoint_id, "source_segment_id": self.batch.source_segment_id,
            "request_id": self.request_id, "started_at": self.started_at.isoformat(),
            "duration_s": round(time.perf_counter() - self.started, 6),
        })
        return orjson.dumps(row).decode()


def entry_json(row: asyncpg.Record) -> dict[str, Any]:
    """One history entry as ``GET /api/segments/{id}/uploads`` shows it."""
    return {
        "id": row["id"], "method": row["method"],
        "totalBatchCount": row["total_batches"], "currentBatchNumber": row["batch_number"],
        "replaceSessionId": row["replace_session_id"], "replaceCommitted": row["replace_committed"],
        **{key: row[column] for key, column in _COUNTS.items()},
        "rejectsStored": row["rejects_stored"], "rejectsNotStored": row["rejects_not_stored"],
        "rejectsExpired": row["rejects_expired_at"] is not None,
        "ids": row["ids"], "category": row["category"],
        "sourceEndpointID": row["source_endpoint_id"], "sourceSegmentID": row["source_segment_id"],
        "firstLine": row["first_line"],
        "startedAt": row["started_at"].isoformat(), "durationSeconds": row["duration_s"],
        "requestId": row["request_id"],
    }


async def get_upload(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, upload_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["upload_get"], upload_id, segment_id, endpoint_id)
    if row is None:
        raise NotFound(f"segment {segment_id} has no upload {upload_id}", code="upload_not_found")
    return row


async def share_summary(conn: asyncpg.Connection, segment_id: int, endpoint_id: int, session_id: int | None,
                        source: str | None) -> asyncpg.Record:
    """The uploads of one share (a replace session, or a sourceSegmentID): how many, how many of them lost
    their rejects to GATEWAY_REJECTS_TTL, and the rejects only counted (over a cap)."""
    return await conn.fetchrow(QUERIES["upload_share_summary"], segment_id, endpoint_id, session_id, source)


async def list_uploads(pool: asyncpg.Pool, segment_id: int, before: int, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(QUERIES["upload_list"], segment_id, before, limit)


async def sweep_uploads(pool: asyncpg.Pool, rejects_ttl: float, history_ttl: float) -> int:
    """Drop the rejects of uploads older than ``rejects_ttl`` (their history row says so), then history
    older than ``history_ttl``. Returns how many uploads lost their rejects."""
    expired = 0
    while True:
        batch = await pool.fetchval(QUERIES["uploads_expire_rejects"], rejects_ttl, SWEEP_BATCH)
        expired += batch
        if batch < SWEEP_BATCH:
            break
    await pool.execute(QUERIES["uploads_forget_old"], history_ttl)
    return expired
