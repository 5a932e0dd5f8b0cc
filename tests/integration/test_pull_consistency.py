"""Reads that meet a REPLACE mid-commit: each sees the old audience or the new one, whole — never a mix,
never nothing.

The commit is held in flight deterministically: a lock ``IN ACCESS SHARE MODE`` on the live members table
(taken from a separate connection) lets the REPLACE build its new table and then stops it at the swap, whose
DROP needs ACCESS EXCLUSIVE. Reads started then are made to wait (a test counts the backends waiting for a
lock, whichever lock the gateway uses); releasing ours lets the commit finish and the reads go on.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.integration.pull_helpers import (HEADER, BusyWorker, blocked_backends, by_identity, create_job, download,
                                            members_table, people, segment_with, sync_rows, table_lock,
                                            wait_for_blocked_backends, wait_for_status)
from tests.integration.push_helpers import app_client, csv_body, push

OLD, NEW = people(20_000, "old"), people(20_000, "new")  # disjoint identities
AUDIENCES = {"old": (HEADER, by_identity(OLD)), "new": (HEADER, by_identity(NEW))}


def which(export: tuple[list[str], list[list[str]]]) -> str:
    """"old" or "new": the audience an export shows exactly; anything else fails."""
    header, rows = export
    matches = [name for name, audience in AUDIENCES.items() if audience == (header, by_identity(rows))]
    assert matches, (f"neither exactly the old nor exactly the new audience: header {header}, {len(rows)} rows, "
                     f"{sum(row[0].startswith('old') for row in rows)} of them old")
    return matches[0]


@contextlib.asynccontextmanager
async def replace_in_flight(client, db, database_url: str, segment_id: str) -> AsyncIterator[None]:
    """The segment (holding OLD) has a REPLACE with NEW mid-commit (stopped at the swap) during the block;
    committed afterwards. The REPLACE holds the segment's row lock meanwhile, so POST /v1/jobs on this
    segment waits too (its foreign key check)."""
    assert which(await sync_rows(client, segment_id)) == "old"
    table = members_table(segment_id)
    async with table_lock(database_url, table, "ACCESS SHARE"):
        already_blocked = await blocked_backends(db)  # a blocker job's, if any: held, it stays blocked
        replace = asyncio.create_task(push(client, segment_id, csv_body(HEADER, NEW), "REPLACE"))
        await wait_for_blocked_backends(db, already_blocked + 1)
        yield
        assert not replace.done()
    assert (await replace).result["replaceCommitted"] is True
    assert which(await sync_rows(client, segment_id)) == "new"
    assert await blocked_backends(db) == 0


async def test_sync_reads_during_a_committing_replace(client, db, database_url):
    segment_id = await segment_with(client, OLD)
    async with replace_in_flight(client, db, database_url, segment_id):
        readers = [asyncio.create_task(sync_rows(client, segment_id)) for _ in range(4)]
        await wait_for_blocked_backends(db, 1 + len(readers))  # each waiting while the commit is in flight
        assert not any(reader.done() for reader in readers)
    for reader in readers:
        which(await reader)


async def test_a_job_snapshot_during_a_committing_replace(aiohttp_client, settings, db, database_url):
    client = await app_client(aiohttp_client, settings, export_workers=1)
    segment_id = await segment_with(client, OLD)
    async with BusyWorker(client, database_url) as worker:
        job = await create_job(client, segment_id)  # created before the REPLACE takes the segment's lock
        async with replace_in_flight(client, db, database_url, segment_id):
            await worker.release()
            await wait_for_status(client, job, "running")
            await wait_for_blocked_backends(db, 2)  # the REPLACE, and the job's snapshot (the blocker is done)
    await wait_for_status(client, job, "complete")
    which((await download(client, job)).table())
