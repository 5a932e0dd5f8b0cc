"""Apply ``sql/migrations/NNNN_name.sql`` in order, once each, even with many processes starting at once.

A session-level advisory lock serialises the runners; each migration runs in its own transaction
together with the row that records it, so a failed migration leaves nothing behind.
"""

from __future__ import annotations

import logging

import asyncpg

from gateway.db.queries import QUERIES, migration_files

log = logging.getLogger(__name__)


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply what is missing; return the versions applied by this call."""
    applied_now: list[str] = []
    await conn.execute(QUERIES["migrations_lock"])
    try:
        await conn.execute(QUERIES["migrations_create_table"])
        done = {row["version"] for row in await conn.fetch(QUERIES["migrations_applied"])}
        for version, path in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(QUERIES["migrations_record"], version)
            log.info("applied migration %s", version)
            applied_now.append(version)
    finally:
        await conn.execute(QUERIES["migrations_unlock"])
    return applied_now


def latest_version() -> str:
    return migration_files()[-1][0]


async def is_current(conn: asyncpg.Connection) -> bool:
    try:
        return await conn.fetchval(QUERIES["migrations_latest"]) == latest_version()
    except asyncpg.UndefinedTableError:
        return False
