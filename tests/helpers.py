"""Helpers every kind of test shares: waiting for a condition with a bound, and the names of the tables a
segment, a REPLACE session or an export job owns (written here once; the gateway builds them in
gateway.db.names)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

COPY_BACKENDS = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                 "AND pid <> pg_backend_pid() AND query ILIKE 'COPY%'")

LOCK_WAITERS = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")


async def eventually(check: Callable[[], Awaitable[T]], what: str, timeout: float = 10.0) -> T:
    """Poll ``await check()`` until it is truthy; its value. An AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def copy_in_progress(db) -> list[int]:
    """The backends running a COPY (an upload streaming its body, a download streaming its rows)."""
    return [row["pid"] for row in await db.fetch(COPY_BACKENDS)]


async def lock_waiters(db) -> list[int]:
    """The backends waiting for a lock (a heavyweight one: a row or a table)."""
    return [row["pid"] for row in await db.fetch(LOCK_WAITERS)]


def members_table(segment_id: str | int) -> str:
    return f"audience.members_{int(segment_id)}"


def staging_table(session_id: int) -> str:
    return f"staging.replace_{int(session_id)}"


def export_table(job_id: int) -> str:
    return f"exports.job_{int(job_id)}"
