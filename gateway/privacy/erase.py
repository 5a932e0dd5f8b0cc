"""Erasure requests: stored when asked, worked through by a job (gateway.jobs.erasure), audited.

The request's transaction stores its identities (in every form, gateway.privacy.identities), its audit row
and, with ``suppress``, their hashes on the suppression list; the job it enqueues then erases them segment
by segment (``erase_segments``), from stored rejected rows (``erase_rejects``), and completes with
``finish``, which keeps the SHA-256 of each identity for the audit and drops the identities themselves.

Each segment is erased under its apply lock taken exclusively (gateway.audience.segments.hold_segment), as
a REPLACE commit takes it: ADD and REMOVE batches applying to it finish first or wait, so an erasure and a
push of one segment serialise. A push whose suppression check ran before the request's transaction
committed applies before the job takes the lock, and is erased.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import asyncpg
import orjson

from gateway.audience.changefeed import declare_writes
from gateway.audience.segments import hold_segment
from gateway.db.queries import QUERIES
from gateway.privacy.identities import FORM_COLUMNS, Received, erase_form
from gateway.db.status import rows_affected

log = logging.getLogger(__name__)

JOB_KIND = "PrivacyErase"
SEGMENTS_PER_TRANSACTION = 50  # segments erased (and locked) per transaction
PLACES = ("members", "staged", "snapshots")  # what privacy_erase_segment returns, in order


class IdentitySource(Protocol):
    received: Received

    def rows(self, job_id: int) -> AsyncIterator[tuple[Any, ...]]: ...


async def store_request(conn: asyncpg.Connection, job_id: int, endpoint_id: int, key_id: int, request_id: str,
                        source: IdentitySource, suppress: bool) -> Received:
    """In the transaction that enqueued job ``job_id``: its identities (streamed from ``source``), its
    audit row and, with ``suppress``, their hashes on the endpoint's suppression list."""
    await conn.copy_records_to_table("privacy_erase_identities", records=source.rows(job_id),
                                     columns=("job_id", *FORM_COLUMNS))
    received = source.received
    await conn.execute(QUERIES["privacy_request_insert"], job_id, endpoint_id, request_id, key_id, suppress,
                       received.received, received.invalid, orjson.dumps(received.invalid_samples).decode())
    if suppress:
        await conn.execute(QUERIES["suppression_insert_erased"], endpoint_id, job_id)
    return received


async def prepare(pool: asyncpg.Pool) -> None:
    """Before a job erases: statistics on the identities just loaded (each members table is then probed by
    its index), and the identities of erasures that ended without completing dropped."""
    await pool.execute(QUERIES["privacy_erase_leftovers"])
    await pool.execute(QUERIES["privacy_erase_analyze"])


async def erase_segments(pool: asyncpg.Pool, job_id: int, endpoint_id: int) -> None:
    """Erase job ``job_id``'s identities from every segment of the endpoint, ``SEGMENTS_PER_TRANSACTION`` at
    a time, each transaction recording what it found (a job taken over starts again: erasing twice finds
    nothing the second time, and what the first time found stays recorded)."""
    segments = await pool.fetch(QUERIES["privacy_erase_segments"], endpoint_id)
    for start in range(0, len(segments), SEGMENTS_PER_TRANSACTION):
        found: dict[str, dict[str, int]] = {}
        async with pool.acquire() as conn, conn.transaction():
            await declare_writes(conn, endpoint_id)
            for segment in segments[start:start + SEGMENTS_PER_TRANSACTION]:
                await hold_segment(conn, segment["id"])
                counts = await conn.fetchval(QUERIES["privacy_erase_segment"], segment["id"], job_id,
                                             erase_form(segment["identity_attribute"], segment["identity_hashing"]))
                if any(counts):
                    found[str(segment["id"])] = dict(zip(PLACES, counts))
            if found:
                await conn.execute(QUERIES["privacy_record_found"], job_id, orjson.dumps(found).decode())


async def erase_values(conn: asyncpg.Connection | asyncpg.Pool, job_id: int, form: str) -> set[str]:
    """Job ``job_id``'s identities in ``form`` (as a segment with that form stores them)."""
    return {row[0] for row in await conn.fetch(QUERIES["privacy_erase_values"], job_id, form)}


async def found_members(conn: asyncpg.Connection | asyncpg.Pool, job_id: int) -> set[int]:
    """The segments job ``job_id`` erased members from (so far)."""
    found = orjson.loads(await conn.fetchval(QUERIES["privacy_request_found"], job_id) or "{}")
    return {int(segment) for segment, counts in found.items() if counts.get("members")}


async def record_files(conn: asyncpg.Connection, job_id: int, segment_id: int, files: int) -> None:
    """``files`` more export files of the segment deleted by erasure ``job_id`` (its ``found``)."""
    await conn.execute(QUERIES["privacy_record_files"], job_id, str(segment_id), files)


async def erase_rejects(conn: asyncpg.Connection, job_id: int, endpoint_id: int) -> int:
    """Delete the endpoint's stored rejected rows whose raw text holds one of the identities; how many.
    Upload history keeps its counts (it holds no identity)."""
    status = await conn.execute(QUERIES["privacy_erase_rejects"], endpoint_id, job_id)
    return rows_affected(status)


async def finish(conn: asyncpg.Connection, job_id: int, rejects_erased: int) -> None:
    """In the job's last transaction: the audit keeps each identity's SHA-256; the identities are dropped."""
    await conn.execute(QUERIES["privacy_complete"], job_id, rejects_erased)


async def get_request(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int,
                      job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(QUERIES["privacy_request_get"], job_id, endpoint_id)


async def list_requests(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, before: int, limit: int,
                        hashes: list[str] | None) -> list[asyncpg.Record]:
    """The endpoint's erasures, newest first; with ``hashes``, those whose identities held one of them."""
    return await conn.fetch(QUERIES["privacy_request_page"], endpoint_id, before, limit, hashes)


STATUSES = {"waiting": "NEW", "running": "PROCESSING", "complete": "SUCCEEDED", "error": "FAILED",
            "canceled": "FAILED"}


def describe(row: asyncpg.Record) -> dict[str, Any]:
    """An erasure as ``/api/privacy`` shows it: never an identity."""
    details = orjson.loads(row["found"])
    found = {segment: counts["members"] for segment, counts in details.items() if counts.get("members")}
    result: dict[str, Any] = {"id": row["job_id"], "status": STATUSES[row["status"]]}
    if row["status"] in ("error", "canceled"):
        result["reason"] = row["reason"] or row["status"]
    finished = row["finished_at"] if row["status"] == "complete" else None
    result.update({
        "requestId": row["request_id"], "keyId": row["key_id"], "suppress": row["suppress"],
        "numReceived": row["received"], "numInvalid": row["invalid"],
        "invalidSamples": orjson.loads(row["invalid_samples"]),
        "identities": row["identities"],  # distinct identities, known once complete (their hashes are kept)
        "found": found, "totalErased": sum(found.values()), "erasedFrom": details,
        "rejectsErased": row["rejects_erased"],
        "filesErased": sum(counts.get("files", 0) for counts in details.values()),
        "timings": {
            "createdAt": row["created_at"].isoformat(),
            "startedAt": row["started_at"].isoformat() if row["started_at"] else None,
            "finishedAt": finished.isoformat() if finished else None,
            "seconds": round((finished - row["created_at"]).total_seconds(), 6) if finished else None,
            "workSeconds": round((finished - row["started_at"]).total_seconds(), 6)
            if finished and row["started_at"] else None,
        },
    })
    return result
