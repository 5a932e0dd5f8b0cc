"""Connecting to PostgreSQL (external or embedded), and the one place driver errors become ours."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from gateway.db.embedded import EmbeddedPostgres
from gateway.errors import DatabaseUnavailable
from gateway.settings import Settings
from gateway.db.queries import QUERIES

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 150000  # PostgreSQL 15

# Errors that mean "the database is not there right now" rather than "this request is wrong".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, crash, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.InvalidCatalogNameError,  # the database itself is gone
)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


async def create_pool(url: str, *, max_size: int = 10, min_size: int = 1) -> asyncpg.Pool:
    """A pool on a reachable PostgreSQL 15+; otherwise DatabaseUnavailable with one clear line."""
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=10,
                                         command_timeout=None, server_settings={"jit": "off"})
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {redact(url)}: {exc}") from None
    except asyncpg.PostgresError as exc:
        raise DatabaseUnavailable(f"PostgreSQL at {redact(url)} refused the connection: {exc}") from None
    version = await pool.fetchval(QUERIES["server_version_num"])
    if version < MIN_SERVER_VERSION:
        await pool.close()
        raise DatabaseUnavailable(
            f"PostgreSQL at {redact(url)} is version {version // 10000}; audience-gateway needs 15 or newer")
    return pool


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Turn a lost or unreachable database into DatabaseUnavailable (503)."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        log.warning("database unavailable: %s", exc)
        raise DatabaseUnavailable("the database is unavailable; try again shortly") from exc


@asynccontextmanager
async def attach_database(settings: Settings) -> AsyncIterator[str]:
    """The database's URL for the duration: the configured one, else the embedded server in the data dir,
    started (or attached to, if another process runs it) on entry and left on exit, which stops it if this
    process was its last user (gateway.db.embedded)."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    url = await asyncio.to_thread(embedded.start)
    try:
        yield url
    finally:
        await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def database_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection for a CLI command: the configured URL, or the embedded server (attached if running)."""
    async with attach_database(settings) as url, await create_pool(url, max_size=1) as pool, \
            pool.acquire() as conn:
        yield conn
