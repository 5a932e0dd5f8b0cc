"""Segment jobs: what a job evaluates, who asked, and what each definition gave.

A segment job is a row of the generic job queue (``jobs``, kind ``SegmentJob``, no segment) plus its row of
``segment_jobs``. This module creates and reads them with the named queries; the queue's ``Kind`` lives in
``gateway.jobs.segment_jobs`` (a higher layer) and runs ``gateway.segmentation.evaluate``.

Statuses: the queue's, shown with the hosted service's names (``STATUS_NAMES``). A job is queued the moment
it is created (one statement inserts it and wakes the workers), so ``NEW`` is never shown; a cancel takes
effect at once (nothing of a segment job is committed before it completes: see ``evaluate``), so
``CANCELLING`` is never shown either. Both are accepted as ``status`` filters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from gateway.db.queries import QUERIES
from gateway.errors import NotFound
from gateway.ids import parse_int

JOB_KIND = "SegmentJob"
JOB_SOURCES = ("api", "scheduler")
ALL_DEFINITIONS = "*"

# the queue's statuses → the hosted service's
STATUS_NAMES = {"waiting": "QUEUED", "running": "PROCESSING", "complete": "SUCCEEDED", "error": "FAILED",
                "canceled": "CANCELLED"}
STATUSES = ("NEW", "QUEUED", "PROCESSING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED")


def queue_statuses(status: str) -> list[str]:
    """The queue statuses a hosted status name stands for (none for NEW and CANCELLING: never shown)."""
    return [queued for queued, shown in STATUS_NAMES.items() if shown == status]


def unknown_job(job_id: object) -> NotFound:
    """Another endpoint's job is answered exactly like one that does not exist."""
    return NotFound(f"segment job {job_id} does not exist", code="segment_job_not_found")


def parse_job_id(text: str) -> int:
    job_id = parse_int(text, 1)
    if job_id is None:
        raise unknown_job(text)
    return job_id


async def create_job(conn: asyncpg.Connection, endpoint_id: int, definition_ids: Sequence[int] | None, *,
                     source: str, schedule_id: int | None = None) -> int:
    """A new queued segment job of ``definition_ids`` (None: every live batch-enabled definition of the
    endpoint when it runs); the workers of every process are woken. The ids are not checked here: the
    route checks them, and a definition deleted before the job runs is an error of the job (``evaluate``)."""
    if source not in JOB_SOURCES:
        raise ValueError(f"segment job source must be one of {JOB_SOURCES}, not {source!r}")
    async with conn.transaction():
        row = await conn.fetchrow(QUERIES["job_insert"], JOB_KIND, endpoint_id, None)
        await conn.execute(QUERIES["segment_job_insert"], row["id"], definition_ids is None,
                           [] if definition_ids is None else list(definition_ids), source, schedule_id)
    return row["id"]


async def check_definitions(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int,
                            definition_ids: Sequence[int]) -> None:
    """NotFound naming the first id that is not a live definition of the endpoint (another endpoint's
    definition is answered exactly like a missing one)."""
    found = {row["id"] for row in await conn.fetch(QUERIES["segment_job_definitions"], endpoint_id,
                                                   list(definition_ids))}
    for definition_id in definition_ids:
        if definition_id not in found:
            raise NotFound(f"segment definition {definition_id} does not exist",
                           code="segment_definition_not_found")


async def get_job(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, job_id: int) -> asyncpg.Record:
    """The endpoint's segment job; NotFound otherwise."""
    row = await conn.fetchrow(QUERIES["segment_job_get"], job_id, endpoint_id, JOB_KIND)
    if row is None:
        raise unknown_job(job_id)
    return row


@dataclasses.dataclass(frozen=True)
class JobPage:
    rows: list[asyncpg.Record]
    total: int
    next_before: int | None  # the job id the next page starts below; None on the last page


async def list_jobs(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, *, statuses: list[str] | None,
                    limit: int, before: int | None) -> JobPage:
    """The endpoint's segment jobs, newest first, ``limit`` at a time below job id ``before``; ``statuses``:
    the queue statuses to keep (None: all)."""
    rows = await conn.fetch(QUERIES["segment_job_page"], endpoint_id, JOB_KIND, statuses, limit, before)
    total = await conn.fetchval(QUERIES["segment_job_count"], endpoint_id, JOB_KIND, statuses)
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(rows, total, rows[-1]["id"] if more else None)


async def cancel_job(conn: asyncpg.Connection, endpoint_id: int, job_id: int) -> bool:
    """Cancel the endpoint's queued or running segment job; False if it had already ended (it stays as it
    ended). NotFound if it is not the endpoint's."""
    if await conn.fetchval(QUERIES["segment_job_cancel"], job_id, endpoint_id, JOB_KIND) is not None:
        return True
    await get_job(conn, endpoint_id, job_id)
    return False


def _epoch_ms(value: Any) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def describe(row: asyncpg.Record) -> dict[str, Any]:
    """A job as the API shows it (the hosted service's field names)."""
    metrics = _json(row["metrics"], {})
    errors = _json(row["errors"], [])
    if row["status"] == "error" and not errors and row["reason"]:
        errors = [{"code": "job_failed", "msg": row["reason"]}]
    segments = ([{"segmentId": ALL_DEFINITIONS}] if row["all_definitions"]
                else [{"segmentId": str(i)} for i in row["definition_ids"]])
    job: dict[str, Any] = {
        "id": str(row["id"]),
        "status": STATUS_NAMES[row["status"]],
        "segments": segments,
        "source": row["source"],
        "errors": errors,
        "creationTime": _epoch_ms(row["created_at"]),
        "updateTime": _epoch_ms(row["updated_at"]),
        "metrics": {
            "totalTime": metrics.get("totalTime", {"startTimeInMs": _epoch_ms(row["started_at"]),
                                                   "endTimeInMs": _epoch_ms(row["finished_at"]),
                                                   "totalTimeInMs": None}),
            "totalProfiles": metrics.get("totalProfiles", 0),
            "segmentedProfileCounter": metrics.get("segmentedProfileCounter", {}),
            "segmentedProfileByStatusCounter": metrics.get("segmentedProfileByStatusCounter", {}),
            "segmentTimeInMs": metrics.get("segmentTimeInMs", {}),
        },
    }
    if row["schedule_id"] is not None:
        job["properties"] = {"scheduleId": str(row["schedule_id"])}
    return job


def _json(value: Any, default: Any) -> Any:
    """A jsonb column (asyncpg hands it over as text unless a codec is set)."""
    if value is None:
        return default
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value
