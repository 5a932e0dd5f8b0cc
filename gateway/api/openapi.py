"""``GET /openapi.json``: the OpenAPI 3.1 description of every route (the file ``gateway/openapi.json``); no key."""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

routes = web.RouteTableDef()


@cache
def document() -> bytes:
    return resources.files("gateway").joinpath("openapi.json").read_bytes()


@routes.get("/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=document(), content_type="application/json")
