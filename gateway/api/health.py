"""Liveness and readiness; no key needed."""

from __future__ import annotations

from aiohttp import web

from gateway import state
from gateway.db.pool import CONNECTION_ERRORS
from gateway.db.migrations import is_current
from gateway.http.responses import failure, success

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving."""
    return success({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """The database answers and carries every migration this version knows (asked on the control pool, which
    busy uploads and downloads cannot take)."""
    try:
        async with request.app[state.CONTROL_POOL].acquire(timeout=5) as conn:
            migrated = await is_current(conn)
    except CONNECTION_ERRORS:
        return failure(503, "database_unavailable", "the database does not answer")
    if not migrated:
        return failure(503, "not_migrated", "the database schema is not at the latest migration")
    return success({"status": "ready"})
