"""The aiohttp application factory and its resources (one ``cleanup_ctx`` entry each)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import state
from gateway.ops import metrics
from gateway.ops.workers import prepare_database
from gateway.api import (audiences, data, definitions, export_files, health, jobs, manage, openapi, previews, privacy,
                         schedules, search, segment_jobs, segments, uploads)
from gateway.api import console
from gateway.api import metrics as metrics_api
from gateway.http.clients import DataSlots
from gateway.db.pool import CONNECTION_ERRORS, attach_database, create_pool
from gateway.http.drain import InFlight
from gateway.auth.cache import KeyCache
from gateway.audience.segment_lists import SegmentLists
from gateway.http.middleware import (auth_middleware, close_when_draining, error_middleware, on_answer_prepare,
                                request_middleware)
from gateway.jobs import sweepers
from gateway.jobs.erasure import ERASE
from gateway.jobs.export_files import KIND as EXPORT_FILE
from gateway.jobs.exports import EXPORT
from gateway.jobs.queue import JobWorkers
from gateway.jobs.segment_jobs import SEGMENT_JOB
from gateway.settings import Settings
from gateway.auth.throttle import FailureThrottle

log = logging.getLogger(__name__)

# JSON routes are small; data routes stream request.content under their own byte limit
# (client_max_size only guards request.read()/json()/post()).
JSON_BODY_LIMIT = 1024 * 1024
# The gateway undoes Content-Encoding itself (gateway.ingest.upload): one bounded code path, and a JSON 415 for
# encodings it does not take instead of the HTTP parser's plain-text 400.
HANDLER_ARGS = {"auto_decompress": False}


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[request_middleware, error_middleware, auth_middleware],
                          client_max_size=JSON_BODY_LIMIT, handler_args=HANDLER_ARGS)
    app[state.SETTINGS] = settings
    app[state.IN_FLIGHT] = InFlight()
    app[state.DATA_SLOTS] = DataSlots(settings.data_slot_count, settings.data_slot_wait)
    app.on_response_prepare.append(on_answer_prepare)
    app.on_response_prepare.append(close_when_draining)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(pool_metrics_ctx)
    app.cleanup_ctx.append(keys_ctx)
    app.cleanup_ctx.append(segment_lists_ctx)
    app.cleanup_ctx.append(sweepers_ctx)
    app.cleanup_ctx.append(job_workers_ctx)
    app.add_routes(health.routes)
    app.add_routes(segments.routes)
    app.add_routes(data.routes)
    app.add_routes(jobs.routes)
    app.add_routes(manage.routes)
    app.add_routes(definitions.routes)
    app.add_routes(schedules.routes)
    app.add_routes(metrics_api.routes)
    app.add_routes(uploads.routes)
    app.add_routes(privacy.routes)
    app.add_routes(export_files.routes)
    app.add_routes(segment_jobs.routes)
    app.add_routes(audiences.routes)
    app.add_routes(search.routes)
    app.add_routes(previews.routes)
    app.add_routes(openapi.routes)
    app.add_routes(console.routes)
    return app


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Embedded server if no URL is set, then the pools (main and control, see gateway.http.clients),
    migrations and the bootstrap key."""
    settings = app[state.SETTINGS]
    async with attach_database(settings) as url, await create_pool(url, max_size=settings.pool_max_size) as pool:
        generated = await prepare_database(pool, settings.api_key)
        if generated:
            app[state.GENERATED_KEY] = generated
        async with await create_pool(url, max_size=settings.control_pool_size) as control_pool:
            app[state.POOL] = pool
            app[state.CONTROL_POOL] = control_pool
            app[state.DATABASE_URL] = url
            yield


async def pool_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sample the pools' size and use into the metrics every second."""
    task = asyncio.create_task(metrics.sample_pool_forever(app[state.POOL], app[state.CONTROL_POOL]),
                               name="pool-metrics")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def keys_ctx(app: web.Application) -> AsyncIterator[None]:
    """The API-key cache with its revocation listener (gateway.auth.cache; its last-used times are flushed
    by a sweep, and once more at shutdown), and the throttle of failed authentications (gateway.auth.throttle)."""
    settings = app[state.SETTINGS]
    keys = KeyCache(app[state.CONTROL_POOL])
    app[state.KEYS] = keys
    app[state.AUTH_THROTTLE] = FailureThrottle(settings.auth_failure_limit, settings.auth_failure_window)
    listener = asyncio.create_task(keys.listen_for_revocations(app[state.DATABASE_URL]),
                                   name="key-revocation-listener")
    yield
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    try:
        await keys.flush_last_used()
    except CONNECTION_ERRORS as exc:
        log.warning("key last-used times not written at shutdown: database unavailable (%s)", exc)


async def segment_lists_ctx(app: web.Application) -> AsyncIterator[None]:
    """The cache of ``GET /v1/segments`` with its change listener (gateway.audience.segment_lists)."""
    lists = SegmentLists(app[state.CONTROL_POOL])
    app[state.SEGMENT_LISTS] = lists
    listener = asyncio.create_task(lists.listen(app[state.DATABASE_URL]), name="segment-list-listener")
    yield
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)


async def sweepers_ctx(app: web.Application) -> AsyncIterator[None]:
    """The periodic sweeps (gateway.jobs.sweepers)."""
    tasks = sweepers.start(sweepers.Resources(app[state.POOL], app[state.SETTINGS], app[state.KEYS]))
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def job_workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """The job queue's workers (gateway.jobs.queue), running the kinds of job listed here."""
    workers = JobWorkers(app[state.POOL], app[state.DATABASE_URL], app[state.SETTINGS],
                         kinds=[EXPORT, EXPORT_FILE, ERASE, SEGMENT_JOB])
    await workers.start()
    yield
    await workers.stop()
