"""Helpers for the pull-path tests: reading exports (sync GET and job downloads), driving export jobs,
and holding a job in the state a test needs with PostgreSQL locks taken from a separate connection.

How jobs are held where a test wants them (no sleeps, no races):

- ``running``: lock the segment's members table ``IN ACCESS EXCLUSIVE MODE`` before the job is created;
  the worker claims the job, then its ``CREATE TABLE … AS SELECT … FROM audience.members_<id>`` waits.
- ``waiting``: use an app with one export worker and keep that worker busy on a *blocker* job that is
  held running as above (``busy_worker``); jobs created meanwhile cannot be claimed. (Locking a new job's
  row after ``POST /v1/jobs`` would race the worker, which is woken by NOTIFY at once.)
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import io
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from tests.conftest import AUTH
from tests.helpers import eventually, export_table, members_table  # noqa: F401 (used by the pull tests)
from tests.integration.push_helpers import Reply, create_segment, csv_body, push_ok

T = TypeVar("T")
FINAL_STATUSES = frozenset({"complete", "error", "canceled"})


# -- waiting ------------------------------------------------------------------------------------------

# -- reading exports ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Download:
    """A whole answer, body as bytes (CSV) — or a JSON failure."""

    status: int
    body: bytes
    headers: Any  # the response's CIMultiDictProxy

    @property
    def reply(self) -> Reply:
        return Reply(self.status, self.body.decode("utf-8", "replace"),
                     self.headers.get("Content-Type", "").split(";")[0].strip())

    def assert_failure(self, status: int, code: str | None = None) -> dict[str, Any]:
        """The JSON failure envelope with this status (and code); the whole body."""
        self.reply.assert_failure(status, code)
        return self.reply.body

    def table(self) -> tuple[list[str], list[list[str]]]:
        """A 200 CSV answer, parsed: (header, rows)."""
        assert self.status == 200, (self.status, self.body[:500])
        assert self.headers["Content-Type"] == "text/csv; charset=utf-8", self.headers
        return parse_csv(self.body)


def parse_csv(body: bytes) -> tuple[list[str], list[list[str]]]:
    """Header and rows, with Python's csv module (strict UTF-8; embedded CR/LF kept as sent)."""
    header, *rows = csv.reader(io.StringIO(body.decode("utf-8"), newline=""), strict=True)
    return header, rows


def without_id(answer: Any, some_id: int | str) -> Any:
    """A JSON answer with every mention of one id (the number, or in text) masked, to compare the answers
    about two ids."""
    if isinstance(answer, dict):
        return {key: without_id(value, some_id) for key, value in answer.items()}
    if isinstance(answer, list):
        return [without_id(value, some_id) for value in answer]
    if isinstance(answer, str):
        return re.sub(rf"\b{some_id}\b", "<id>", answer)
    if type(answer) is int and answer == int(some_id):
        return "<id>"
    return answer


def by_identity(rows: Iterable[Sequence[str]]) -> list[list[str]]:
    """Rows in a canonical order (exports promise no order): sorted by the identity, the first column."""
    return sorted((list(row) for row in rows), key=lambda row: (row[0], row))


async def fetch(client, method: str, path: str, headers: dict[str, str] | None = None, **options: Any) -> Download:
    response = await client.request(method, path, headers={**AUTH, **(headers or {})}, **options)
    return Download(response.status, await response.read(), response.headers)


async def sync_get(client, segment_id: str | int, headers: dict[str, str] | None = None, **options: Any) -> Download:
    return await fetch(client, "GET", f"/v1/segments/{segment_id}/data", headers, **options)


async def sync_rows(client, segment_id: str | int) -> tuple[list[str], list[list[str]]]:
    """The sync export of a segment that must succeed: (header, rows in canonical order)."""
    header, rows = (await sync_get(client, segment_id)).table()
    return header, by_identity(rows)


# -- segments -----------------------------------------------------------------------------------------

HEADER = ["email", "name"]


def people(count: int, prefix: str = "user") -> list[list[str]]:
    """``count`` members (``email,name``), identities unique per ``prefix``."""
    return [[f"{prefix}{i:06d}@x.com", f"Name {prefix} {i}"] for i in range(count)]


async def segment_with(client, rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER, *,
                       name: str = "pulled", headers: dict[str, str] = AUTH) -> str:
    """A new segment holding ``rows`` (one ADD unless empty); its id."""
    segment_id = await create_segment(client, name, headers=headers)
    if rows:
        await push_ok(client, segment_id, csv_body(header, rows), headers=headers)
    return segment_id




async def table_exists(db: asyncpg.Connection, table: str) -> bool:
    return await db.fetchval("SELECT to_regclass($1) IS NOT NULL", table)


# -- jobs ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Job:
    id: int
    data_id: int

    @property
    def data_path(self) -> str:
        return f"/v1/jobs/{self.id}/data/{self.data_id}"


async def post_job(client, payload: Any, headers: dict[str, str] = AUTH) -> Reply:
    response = await client.post("/v1/jobs", json=payload, headers=headers)
    return Reply(response.status, await response.text(), response.content_type)


async def create_job(client, segment_id: str | int, headers: dict[str, str] = AUTH) -> Job:
    result = (await post_job(client, {"segmentId": segment_id, "jobType": "ExportSegmentData"}, headers)).result
    assert set(result) == {"jobId", "jobDataId"}, result
    assert all(type(value) is int for value in result.values()), result
    return Job(result["jobId"], result["jobDataId"])


async def job_reply(client, job_id: int | str, method: str = "GET", headers: dict[str, str] = AUTH) -> Reply:
    """``GET`` (status) or ``DELETE`` (cancel) ``/v1/jobs/{id}``."""
    response = await client.request(method, f"/v1/jobs/{job_id}", headers=headers)
    return Reply(response.status, await response.text(), response.content_type)


async def job_status(client, job: Job, method: str = "GET", headers: dict[str, str] = AUTH) -> str:
    """The job's status as ``GET /v1/jobs/{id}`` (or ``DELETE``: cancel) answers it, after checking the
    answer's shape: ``{"id": <int>, "status": …}`` (more fields may follow)."""
    result = (await job_reply(client, job.id, method, headers)).result
    assert type(result["id"]) is int and result["id"] == job.id, result
    assert result["status"] in {"waiting", "running", "complete", "error", "canceled"}, result
    return result["status"]


async def cancel(client, job: Job) -> str:
    """``DELETE /v1/jobs/{id}``; the status it answers."""
    return await job_status(client, job, "DELETE")


async def wait_for_status(client, job: Job, wanted: str, timeout: float = 15.0,
                          headers: dict[str, str] = AUTH) -> None:
    """Poll the job until it has status ``wanted``; fails early if it ends in another final status."""

    async def reached() -> bool:
        status = await job_status(client, job, headers=headers)
        assert status == wanted or status not in FINAL_STATUSES, f"job {job.id} is {status}, not {wanted}"
        return status == wanted

    await eventually(reached, f"job {job.id} to be {wanted}", timeout)


async def download(client, job: Job, headers: dict[str, str] | None = None, **options: Any) -> Download:
    return await fetch(client, "GET", job.data_path, headers, **options)


async def export_via_job(client, segment_id: str | int) -> tuple[Job, list[str], list[list[str]]]:
    """The whole job flow: create, poll until complete, download; (job, header, rows in canonical order)."""
    job = await create_job(client, segment_id)
    await wait_for_status(client, job, "complete")
    header, rows = (await download(client, job)).table()
    return job, header, by_identity(rows)


async def job_row(db: asyncpg.Connection, job: Job) -> dict[str, Any]:
    """What PostgreSQL holds for the job (not what the API says)."""
    row = await db.fetchrow("SELECT status, attempts, lease_owner, started_at, data_dropped_at, data_file, "
                            "to_regclass($2) IS NOT NULL AS has_table FROM jobs WHERE id = $1",
                            job.id, export_table(job.id))
    return dict(row)


# -- holding jobs with locks --------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def table_lock(database_url: str, table: str, mode: str = "ACCESS EXCLUSIVE") -> AsyncIterator[None]:
    """Hold ``LOCK TABLE table IN mode MODE`` in a transaction of its own connection for the block."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN {mode} MODE")
            yield
    finally:
        await conn.close()


async def blocked_backends(db: asyncpg.Connection) -> int:
    """This database's backends waiting for a lock (on a table, a row, a transaction: whatever it is)."""
    return await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND wait_event_type = 'Lock'")


async def wait_for_blocked_backends(db: asyncpg.Connection, count: int) -> None:
    async def enough() -> bool:
        return await blocked_backends(db) >= count

    await eventually(enough, f"{count} backend(s) to wait for a lock")


@contextlib.asynccontextmanager
async def running_job(client, database_url: str, segment_id: str) -> AsyncIterator[Job]:
    """A new job on the segment, held ``running`` (its snapshot waits for the members table) in the block."""
    async with table_lock(database_url, members_table(segment_id)):
        job = await create_job(client, segment_id)
        await wait_for_status(client, job, "running")
        yield job


class BusyWorker:
    """For an app with ``export_workers=1``: from entering until ``release()`` (or the block's end) its worker
    is busy on a blocker job held running, so jobs created meanwhile stay ``waiting``. Once released, the
    blocker completes and the worker goes on with the waiting jobs, oldest first.

    ``async with BusyWorker(client, database_url) as worker: …``
    """

    def __init__(self, client, database_url: str) -> None:
        self.client = client
        self.database_url = database_url
        self.blocker: Job | None = None
        self.released = False
        self._hold = contextlib.AsyncExitStack()

    async def __aenter__(self) -> BusyWorker:
        segment_id = await segment_with(self.client, people(1, "blocker"), name="blocker")
        self.blocker = await self._hold.enter_async_context(running_job(self.client, self.database_url, segment_id))
        return self

    async def release(self) -> None:
        """Let the blocker complete; returns once it has (the worker is then free)."""
        self.released = True
        await self._hold.aclose()
        assert self.blocker is not None
        await wait_for_status(self.client, self.blocker, "complete")

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:
            await self._hold.aclose()  # just let go of the lock
        elif not self.released:
            await self.release()
