"""Prometheus metrics: defined here, updated where the work happens, exposed by ``GET /metrics``.

Counters and histograms are per process; with ``serve --workers N`` the parent sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers import prometheus-client, so their values go to files
there and any worker's ``/metrics`` shows the sum. What the database knows for every process (open REPLACE
sessions, jobs by status) is read from it at scrape time instead of being counted.
"""

from __future__ import annotations

import asyncio
import logging
import os

import asyncpg
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.db.pool import CONNECTION_ERRORS
from gateway.db.queries import QUERIES

log = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
NAMESPACE = "audience_gateway"
CONTENT_TYPE = CONTENT_TYPE_LATEST
POOL_SAMPLE_SECONDS = 1.0
# Uploads of millions of rows take minutes: the buckets reach well past the default 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

ROWS_RECEIVED = Counter("rows_received", "CSV data rows received in pushes, valid or not", ["method"],
                        namespace=NAMESPACE)
ROWS_INVALID = Counter("rows_invalid", "CSV data rows of pushes counted invalid (not stored)", ["method"],
                       namespace=NAMESPACE)
ROWS_ADDED = Counter("rows_added", "Identities added or updated (POST) or staged (PUT) by pushes", ["method"],
                     namespace=NAMESPACE)
ROWS_REMOVED = Counter("rows_removed", "Identities removed by pushes (DELETE)", ["method"], namespace=NAMESPACE)
RECEIVED_BYTES = Counter("received_bytes", "CSV bytes received in pushes (after gzip is undone)", ["method"],
                         namespace=NAMESPACE)
SENT_BYTES = Counter("sent_bytes", "Response bytes sent (bodies, as written by the handlers)", ["route"],
                     namespace=NAMESPACE)
REQUEST_DURATION = Histogram("request_duration_seconds", "HTTP request handling time by route pattern",
                             ["method", "route", "status"], namespace=NAMESPACE, buckets=DURATION_BUCKETS)
BATCH_DURATION = Histogram("batch_duration_seconds", "Time to stream and apply one pushed batch", ["method"],
                           namespace=NAMESPACE, buckets=DURATION_BUCKETS)
UPLOADS_IN_FLIGHT = Gauge("uploads_in_flight", "Pushes being streamed or applied", namespace=NAMESPACE,
                          multiprocess_mode="livesum")
ADD_DIRECT_MERGED = Counter("add_direct_merged", "ADD batches whose straight COPY into the members table stopped "
                            "(a known, repeated or concurrently inserted identity) and that were merged instead",
                            namespace=NAMESPACE)
REPLACE_COMMITS = Counter("replace_commits", "REPLACE sessions committed (a new audience went live)",
                          namespace=NAMESPACE)
REPLACE_EXPIRIES = Counter("replace_expiries", "REPLACE sessions expired idle (staged rows purged)",
                           namespace=NAMESPACE)
JOB_DURATION = Histogram("job_duration_seconds", "Export job run time by outcome", ["outcome"],
                         namespace=NAMESPACE, buckets=DURATION_BUCKETS)
EXPORT_ROWS = Counter("export_rows", "Rows materialised by completed export jobs", namespace=NAMESPACE)
POOL_CONNECTIONS = Gauge("pool_connections", "Open PostgreSQL connections of the gateway's pools",
                         namespace=NAMESPACE, multiprocess_mode="livesum")
POOL_CONNECTIONS_IN_USE = Gauge("pool_connections_in_use", "PostgreSQL connections checked out of the pools",
                                namespace=NAMESPACE, multiprocess_mode="livesum")


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


def record_push(method: str, received: int, invalid: int, body_bytes: int, result: dict, seconds: float) -> None:
    """One successful push: what it carried and what it changed."""
    ROWS_RECEIVED.labels(method).inc(received)
    ROWS_INVALID.labels(method).inc(invalid)
    ROWS_ADDED.labels(method).inc(int(result.get("numAdded", 0)))
    ROWS_REMOVED.labels(method).inc(int(result.get("numRemoved", 0)))
    RECEIVED_BYTES.labels(method).inc(body_bytes)
    BATCH_DURATION.labels(method).observe(seconds)


def sample_pool(*pools: asyncpg.Pool) -> None:
    size = sum(pool.get_size() for pool in pools)
    POOL_CONNECTIONS.set(size)
    POOL_CONNECTIONS_IN_USE.set(size - sum(pool.get_idle_size() for pool in pools))


async def sample_pool_forever(*pools: asyncpg.Pool) -> None:
    """Keep this process's pool gauges fresh (the other workers' scrapes read them from their files)."""
    while True:
        sample_pool(*pools)
        await asyncio.sleep(POOL_SAMPLE_SECONDS)


class _DatabaseGauges:
    """Gauges read from the database just before a scrape (the collector itself must not block)."""

    def __init__(self, jobs: dict[str, int], open_sessions: int) -> None:
        self.jobs = jobs
        self.open_sessions = open_sessions

    def collect(self):
        sessions = GaugeMetricFamily(f"{NAMESPACE}_replace_sessions_open", "REPLACE sessions waiting for batches")
        sessions.add_metric([], self.open_sessions)
        jobs = GaugeMetricFamily(f"{NAMESPACE}_jobs", "Export jobs by status", labels=["status"])
        for status in ("waiting", "running", "complete", "error", "canceled"):
            jobs.add_metric([status], self.jobs.get(status, 0))
        return [sessions, jobs]


async def _database_gauges(pool: asyncpg.Pool) -> _DatabaseGauges | None:
    try:
        async with pool.acquire(timeout=5) as conn:
            jobs = {row["status"]: row["jobs"] for row in await conn.fetch(QUERIES["metrics_jobs_by_status"])}
            return _DatabaseGauges(jobs, await conn.fetchval(QUERIES["metrics_open_replace_sessions"]))
    except CONNECTION_ERRORS as exc:
        log.warning("database gauges left out of /metrics: database unavailable (%s)", exc)
        return None


async def exposition(pool: asyncpg.Pool, control_pool: asyncpg.Pool) -> bytes:
    """The Prometheus text page: this process's (or all workers') metrics, then the database's gauges (read
    on the control pool: a scrape answers while uploads and downloads take the main pool)."""
    sample_pool(pool, control_pool)
    if multiprocess_mode():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        page = generate_latest(registry)
    else:
        page = generate_latest(REGISTRY)
    gauges = await _database_gauges(control_pool)
    if gauges is not None:
        registry = CollectorRegistry()
        registry.register(gauges)
        page += generate_latest(registry)
    return page
