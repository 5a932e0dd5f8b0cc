"""Segment jobs (kind ``SegmentJob``): created by ``POST /api/segment/jobs`` or a schedule
(gateway.segmentation.segment_jobs), run by the job queue (gateway.jobs.queue), which claims, leases, takes
over and cancels them as it does every kind. The work is gateway.segmentation.evaluate's: it builds each
definition's audience, then swaps them all in and completes the job in one transaction, so a cancel or a
takeover before that leaves every audience as it was (nothing to discard)."""

from __future__ import annotations

from gateway.jobs import queue
from gateway.segmentation.evaluate import run_job
from gateway.segmentation.segment_jobs import JOB_KIND


def failure_reason(exc: BaseException) -> str:
    return "segment job failed: internal error; the gateway's log has the details"


async def evaluate(lease: queue.Lease) -> None:
    await run_job(lease.pool, lease.id, lease.endpoint_id, lease.attempts, finish=lease.complete, fail=lease.fail)


SEGMENT_JOB = queue.Kind(JOB_KIND, evaluate, failure_reason=failure_reason)
