"""Erasure jobs (kind ``PrivacyErase``): created by ``POST /api/privacy/erase``, run by the job queue
(gateway.jobs.queue) like every kind. The work is gateway.privacy.erase's; this module enqueues it with its
request, and runs it: the segments (each in a transaction of its own batch), then the stored rejected rows
and the audit in the transaction that completes the job."""

from __future__ import annotations

import logging
import time

import asyncpg

from gateway.errors import NotFound
from gateway.ids import parse_int
from gateway.jobs import queue
from gateway.privacy import erase
from gateway.privacy.identities import Received

log = logging.getLogger(__name__)


def unknown_erasure(text: str) -> NotFound:
    """Another endpoint's erasure is answered exactly like one that does not exist."""
    return NotFound(f"erasure {text} does not exist", code="erasure_not_found")


def parse_erasure_id(text: str) -> int:
    job_id = parse_int(text)
    if job_id is None:
        raise unknown_erasure(text)
    return job_id


async def create_erasure(conn: asyncpg.Connection, endpoint_id: int, key_id: int, request_id: str,
                         source: erase.IdentitySource, suppress: bool) -> tuple[int, Received]:
    """Enqueue an erasure with its identities (streamed from ``source``) in one transaction: a request that
    fails while its body streams leaves nothing. Returns the job's id and what the request sent."""
    async with conn.transaction():
        job = await queue.enqueue(conn, ERASE, endpoint_id, None)
        received = await erase.store_request(conn, job["id"], endpoint_id, key_id, request_id, source, suppress)
    return job["id"], received


async def get_erasure(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, job_id: int) -> asyncpg.Record:
    row = await erase.get_request(conn, endpoint_id, job_id)
    if row is None:
        raise unknown_erasure(str(job_id))
    return row


async def run(lease: queue.Lease) -> None:
    started = time.perf_counter()
    await erase.prepare(lease.pool)
    await erase.erase_segments(lease.pool, lease.id, lease.endpoint_id)
    async with lease.pool.acquire() as conn, conn.transaction():
        rejects = await erase.erase_rejects(conn, lease.id, lease.endpoint_id)
        await erase.finish(conn, lease.id, rejects)
        await lease.complete(conn)
    log.info("erasure %d of endpoint %d complete in %.3f s", lease.id, lease.endpoint_id,
             time.perf_counter() - started)


ERASE = queue.Kind(erase.JOB_KIND, run)
