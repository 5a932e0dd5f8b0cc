"""The aiohttp application factory and its resources (one ``cleanup_ctx`` entry each)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import state
from gateway.api import data, health, segments
from gateway.auth import ensure_bootstrap_key
from gateway.database import create_pool
from gateway.embedded import EmbeddedPostgres
from gateway.middleware import auth_middleware, error_middleware
from gateway.migrations import apply_migrations
from gateway.settings import Settings

log = logging.getLogger(__name__)

# JSON routes are small; data routes stream request.content under their own byte limit
# (client_max_size only guards request.read()/json()/post()).
JSON_BODY_LIMIT = 1024 * 1024


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=JSON_BODY_LIMIT)
    app[state.SETTINGS] = settings
    app.cleanup_ctx.append(database_ctx)
    app.add_routes(health.routes)
    app.add_routes(segments.routes)
    app.add_routes(data.routes)
    return app


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Embedded server if no URL is set, then the pool, migrations and the bootstrap key."""
    settings = app[state.SETTINGS]
    url = settings.database_url
    embedded = None
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = await asyncio.to_thread(embedded.start)
        app[state.EMBEDDED] = embedded
    try:
        pool = await create_pool(url, max_size=settings.pool_max_size)
        try:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
                generated = await ensure_bootstrap_key(conn, settings.api_key)
            if generated:
                app[state.GENERATED_KEY] = generated
            app[state.POOL] = pool
            yield
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
