"""``GET /metrics``: the Prometheus text format (a key only if GATEWAY_METRICS_REQUIRE_KEY is set)."""

from __future__ import annotations

from aiohttp import web

from gateway import state
from gateway.ops import metrics

routes = web.RouteTableDef()


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    body = await metrics.exposition(request.app[state.POOL], request.app[state.CONTROL_POOL])
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})
