"""A task that waits with a bound stops when it is cancelled, even as what it waits for arrives.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result when a cancellation lands just as it
completes, and the cancellation is lost: ``serve`` then hung at shutdown (1 start in ~10 under load),
waiting for a job worker that had been woken by its listener in the same instant. Each case here sets the
event and cancels the waiting task a few loop turns later, covering that instant.
"""

import asyncio
import dataclasses

import asyncpg
import pytest

from gateway.http.drain import InFlight
from gateway.jobs.exports import EXPORT
from gateway.jobs.queue import JobWorkers

TURNS = range(6)  # loop turns between the wake-up and the cancellation


async def waiting_on(event: asyncio.Event) -> None:
    while not event._waiters:  # noqa: SLF001 — the only sign that the task now waits on it
        await asyncio.sleep(0)


async def cancel_as_it_wakes(task: asyncio.Task, event: asyncio.Event, turns: int) -> None:
    await asyncio.wait_for(waiting_on(event), 5)
    event.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done, f"the task ran on after its cancellation ({turns} loop turns after the wake-up)"


@pytest.mark.parametrize("turns", TURNS)
async def test_a_job_worker_stops_when_cancelled_as_it_wakes(database_url, settings, turns):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        workers = JobWorkers(pool, database_url, dataclasses.replace(settings, export_workers=1), kinds=[EXPORT],
                             poll_seconds=30)
        task = asyncio.create_task(workers._work())  # noqa: SLF001 — one worker loop, without the listener
        await cancel_as_it_wakes(task, workers._wake, turns)  # noqa: SLF001
    finally:
        await pool.close()


@pytest.mark.parametrize("turns", TURNS)
async def test_the_drain_wait_stops_when_cancelled_as_it_ends(turns):
    in_flight = InFlight()
    with in_flight.track():
        task = asyncio.create_task(in_flight.wait_idle(30))
        await asyncio.wait_for(waiting_on(in_flight._idle), 5)  # noqa: SLF001
    for _ in range(turns):
        await asyncio.sleep(0)
    cancelled = task.cancel()  # False once the wait has returned on its own: nothing to lose then
    done, _ = await asyncio.wait([task], timeout=2)
    assert done and (task.cancelled() or not cancelled), f"the wait lost its cancellation ({turns} turns)"
