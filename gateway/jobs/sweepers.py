"""The periodic sweeps every ``serve`` process runs in the background, in one table (``SWEEPS``): each one's
name, interval and work. Every process runs them all: the key flush writes this process's own last-used
times; the others' work is locked in SQL, so processes do not repeat each other's."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from gateway.audience.metadata import purge_deleted
from gateway.auth.cache import LAST_USED_FLUSH_SECONDS, KeyCache
from gateway.db.pool import CONNECTION_ERRORS
from gateway.ingest.history import sweep_uploads
from gateway.ingest.replace import expire_idle_sessions
from gateway.jobs.export_files import sweep_export_files
from gateway.jobs.exports import drop_expired_exports
from gateway.jobs.queue import give_up_abandoned
from gateway.segmentation.schedules import run_due
from gateway.settings import Settings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Resources:
    """What the sweeps work on."""
    pool: asyncpg.Pool
    settings: Settings
    keys: KeyCache


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    interval: Callable[[Settings], float]
    run: Callable[[Resources], Awaitable[object]]


SCHEDULE_SWEEP_SECONDS = 1.0  # schedules run at most once a minute, at the second their cron names


def sweep_interval(ttl: float) -> float:
    """Sweep often enough to honour short TTLs, at most once a minute."""
    return max(0.5, min(60.0, ttl / 4))


SWEEPS = (
    Sweep("key last-used flush", lambda s: LAST_USED_FLUSH_SECONDS, lambda r: r.keys.flush_last_used()),
    Sweep("replace session sweep", lambda s: sweep_interval(s.replace_session_ttl),
          lambda r: expire_idle_sessions(r.pool, r.settings.replace_session_ttl)),
    Sweep("abandoned job sweep", lambda s: sweep_interval(s.job_lease), lambda r: give_up_abandoned(r.pool)),
    Sweep("export data sweep", lambda s: sweep_interval(s.export_ttl), lambda r: drop_expired_exports(r.pool, r.settings)),
    Sweep("export file sweep", lambda s: sweep_interval(s.export_ttl),
          lambda r: sweep_export_files(r.pool, r.settings)),
    Sweep("deleted segment purge", lambda s: sweep_interval(s.delete_grace),
          lambda r: purge_deleted(r.pool, r.settings.delete_grace)),
    Sweep("upload rejects sweep", lambda s: sweep_interval(s.rejects_ttl),
          lambda r: sweep_uploads(r.pool, r.settings.rejects_ttl, r.settings.upload_history_ttl)),
    Sweep("segment job schedules", lambda s: SCHEDULE_SWEEP_SECONDS, lambda r: run_due(r.pool)),
)


async def sweep_forever(sweep: Sweep, resources: Resources) -> None:
    """Run one sweep every interval; a failure is logged and the next interval tries again."""
    interval = sweep.interval(resources.settings)
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep.run(resources)
        except CONNECTION_ERRORS as exc:
            log.warning("%s skipped: database unavailable (%s)", sweep.name, exc)
        except Exception:
            log.exception("%s failed", sweep.name)


def start(resources: Resources, sweeps: tuple[Sweep, ...] = SWEEPS) -> list[asyncio.Task]:
    """One task per sweep; the caller cancels them."""
    return [asyncio.create_task(sweep_forever(sweep, resources), name=sweep.name) for sweep in sweeps]
