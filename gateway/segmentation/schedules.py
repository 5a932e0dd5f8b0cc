"""Schedules: cron expressions that create segment jobs, several per endpoint, effective at once.

A schedule's cron is 5 fields (minute first) or Quartz's 6 or 7 (seconds first, ``?`` allowed, a year
last), read by croniter, in UTC. Its seconds are one number: a schedule runs at most once a minute. The
due time lives in the row (``next_run_at``, NULL while inactive): ``run_due`` — a sweep in every ``serve``
process — claims due rows with ``FOR UPDATE SKIP LOCKED`` and, in the same transaction, creates each one's
segment job and moves ``next_run_at`` to the first cron time after now. So any number of processes make
one job per due time, and a process that was down through several due times makes one catch-up job, not
one per missed time. Creating or changing a schedule computes ``next_run_at`` at once. No HTTP here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
from croniter import CroniterError, croniter

from gateway.db.queries import QUERIES
from gateway.errors import BadRequest, NotFound
from gateway.ids import parse_int
from gateway.segmentation.definitions import epoch_ms, get_definitions
from gateway.segmentation.segment_jobs import create_job

log = logging.getLogger(__name__)

SCHEDULE_TYPE = "batch_segmentation"
STATES = ("active", "inactive")
ALL_DEFINITIONS = "*"
CLAIM_BATCH = 100  # due schedules one sweep transaction takes at most (the next sweep takes the rest)


@dataclasses.dataclass(frozen=True)
class NewSchedule:
    name: str
    segments: list[str]  # definition ids as text, or ["*"]
    schedule: str  # a cron checked by parse_cron
    state: str = "inactive"


def not_found(schedule_id: int | str) -> NotFound:
    return NotFound(f"schedule {schedule_id} does not exist", code="schedule_not_found")


def parse_schedule_id(text: str) -> int:
    """A path's schedule id; anything that is not a positive bigint is simply not found."""
    schedule_id = parse_int(text)
    if schedule_id is None:
        raise not_found(repr(text))
    return schedule_id


def _invalid(text: str, why: str) -> BadRequest:
    return BadRequest(f"schedule {text!r} is not a cron we run: {why} (5 fields, minute first, or Quartz's 6 or "
                      "7 with seconds first, e.g. \"0 0 1 * * ?\"; times are UTC)", code="invalid_schedule")


def parse_cron(text: object, now: dt.datetime) -> str:
    """``text`` as a cron with a time after ``now``, its fields single-spaced; 400 ``invalid_schedule``."""
    if not isinstance(text, str):
        raise _invalid(str(text), "it must be a string")
    fields = text.split()
    if len(fields) not in (5, 6, 7):
        raise _invalid(text, f"it has {len(fields)} fields")
    if len(fields) > 5 and parse_int(fields[0], 0, 59) is None:
        raise _invalid(text, "its seconds must be one number from 0 to 59 (at most one run a minute)")
    cron = " ".join(fields)
    if not croniter.is_valid(cron, second_at_beginning=True):
        raise _invalid(text, "croniter does not read it")
    if next_run(cron, now) is None:
        raise _invalid(text, "it has no time after now")
    return cron


def next_run(cron: str, after: dt.datetime) -> dt.datetime | None:
    """The first time of ``cron`` strictly after ``after`` (UTC); None when it has none."""
    try:
        return croniter(cron, after.astimezone(dt.UTC), second_at_beginning=True).get_next(dt.datetime)
    except (CroniterError, ValueError, KeyError):  # croniter's errors for a time it cannot find
        return None


def next_runs(cron: str, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The first ``count`` times of ``cron`` strictly after ``after`` (fewer if it has fewer): the times
    the sweep would run it at, for a form to show before the schedule is saved."""
    times: list[dt.datetime] = []
    while len(times) < count and (at := next_run(cron, times[-1] if times else after)) is not None:
        times.append(at)
    return times


async def parse_segments(conn: asyncpg.Connection, endpoint_id: int, value: object) -> list[str]:
    """``properties.segments``: ``["*"]`` or a non-empty list of this endpoint's definition ids (strings
    or integers); 400 ``invalid_properties`` naming what is not."""
    if value == [ALL_DEFINITIONS] or value == ALL_DEFINITIONS:
        return [ALL_DEFINITIONS]
    shape = 'properties.segments must be ["*"] or a list of segment definition ids'
    if not isinstance(value, list) or not value or not all(
            isinstance(item, (str, int)) and not isinstance(item, bool) for item in value):
        raise BadRequest(shape, code="invalid_properties")
    ids: list[int] = []
    for item in value:
        number = parse_int(str(item))
        if number is None:
            raise BadRequest(f"{shape}; {item!r} is not one", code="invalid_properties")
        if number not in ids:
            ids.append(number)
    found = await get_definitions(conn, endpoint_id, ids)
    missing = [str(number) for number in ids if number not in found]
    if missing:
        raise BadRequest(f"properties.segments: no segment definition {', '.join(missing)}", code="invalid_properties")
    return [str(number) for number in ids]


async def database_now(conn: asyncpg.Connection | asyncpg.Pool) -> dt.datetime:
    """The database's clock: every process computes due times from the same one."""
    return await conn.fetchval(QUERIES["clock_now"])


def _next_if_active(state: str, cron: str, now: dt.datetime) -> dt.datetime | None:
    return next_run(cron, now) if state == "active" else None


async def create_schedule(conn: asyncpg.Connection, endpoint_id: int, new: NewSchedule) -> asyncpg.Record:
    now = await database_now(conn)
    return await conn.fetchrow(QUERIES["schedule_insert"], endpoint_id, new.name, new.segments, new.schedule,
                               new.state, _next_if_active(new.state, new.schedule, now))


async def get_schedule(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, schedule_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["schedule_get"], schedule_id, endpoint_id)
    if row is None:
        raise not_found(schedule_id)
    return row


async def schedule_page(conn: asyncpg.Connection, endpoint_id: int, start: int,
                        limit: int) -> tuple[list[asyncpg.Record], int]:
    """The endpoint's schedules ``start`` to ``start + limit`` in id order, and how many it has."""
    rows = await conn.fetch(QUERIES["schedule_page"], endpoint_id, start, limit)
    return list(rows), await conn.fetchval(QUERIES["schedule_count"], endpoint_id)


async def change_schedule(conn: asyncpg.Connection, endpoint_id: int, schedule_id: int,
                          changes: dict[str, Any]) -> asyncpg.Record:
    """Change the fields in ``changes`` (name, segments, schedule, state; checked by the caller). A changed
    cron or state takes effect at once: ``next_run_at`` is computed again from now."""
    async with conn.transaction():
        before = await conn.fetchrow(QUERIES["schedule_lock"], schedule_id, endpoint_id)
        if before is None:
            raise not_found(schedule_id)
        after = {field: changes.get(field, before[field]) for field in ("name", "segments", "schedule", "state")}
        if all(after[field] == before[field] for field in after):
            return before
        next_at = before["next_run_at"]
        if (after["schedule"], after["state"]) != (before["schedule"], before["state"]):
            next_at = _next_if_active(after["state"], after["schedule"], await database_now(conn))
        return await conn.fetchrow(QUERIES["schedule_update"], schedule_id, after["name"], after["segments"],
                                   after["schedule"], after["state"], next_at)


async def delete_schedule(conn: asyncpg.Connection, endpoint_id: int, schedule_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["schedule_delete"], schedule_id, endpoint_id)
    if row is None:
        raise not_found(schedule_id)
    return row


def definition_ids(segments: Sequence[str]) -> list[int] | None:
    """A schedule's ``segments`` as create_job takes them (None: every definition when the job runs)."""
    return None if list(segments) == [ALL_DEFINITIONS] else [int(item) for item in segments]


async def run_due(pool: asyncpg.Pool) -> int:
    """The sweep: create the job of every due active schedule, once; how many it created. One
    transaction claims them, creates their jobs and moves their due times (see the module docstring)."""
    async with pool.acquire() as conn, conn.transaction():
        due = await conn.fetch(QUERIES["schedule_claim_due"], CLAIM_BATCH)
        if not due:
            return 0
        now = await database_now(conn)
        for row in due:
            job_id = await create_job(conn, row["endpoint_id"], definition_ids(row["segments"]),
                                       source="scheduler", schedule_id=row["id"])
            await conn.execute(QUERIES["schedule_ran"], row["id"], next_run(row["schedule"], now), job_id)
    log.info("schedules ran: %d segment job(s) created", len(due))
    return len(due)


def describe(row: asyncpg.Record) -> dict[str, Any]:
    """A schedule as ``/api/config/schedules`` shows it (the hosted service's fields, and ours:
    ``nextRunTime`` in epoch ms, null while inactive, and ``lastJobId``)."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "type": row["type"],
        "properties": {"segments": list(row["segments"])},
        "schedule": row["schedule"],
        "state": row["state"],
        "nextRunTime": None if row["next_run_at"] is None else epoch_ms(row["next_run_at"]),
        "lastJobId": None if row["last_job_id"] is None else str(row["last_job_id"]),
        "createEpoch": int(row["created_at"].timestamp()),
        "updateEpoch": int(row["updated_at"].timestamp()),
        "creationTime": epoch_ms(row["created_at"]),
        "updateTime": epoch_ms(row["updated_at"]),
    }
