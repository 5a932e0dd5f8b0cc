"""``/api/preview`` and ``/api/estimate``: who a PQL expression selects, and how many, before it becomes a
definition (gateway.segmentation.previews, gateway.segmentation.estimates).

Scopes as the rest of ``/api``: reading (a page, an estimate) needs write; creating and deleting need admin.
Another endpoint's preview, an expired one and a deleted one are answered exactly like a missing one (404).
Creating answers 200, not the guide's 201: every operation of this API answers 200 on success (the OpenAPI
document's rule, tests/unit/test_openapi_document.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from gateway import state
from gateway.api.manage import check_parameters
from gateway.api.requests import check_fields, read_small_body
from gateway.errors import BadRequest
from gateway.http.paging import PAGE_PARAMETERS, encode_cursor, parse_page
from gateway.http.responses import success
from gateway.segmentation.estimates import estimate
from gateway.segmentation.previews import (create_preview, delete_preview, get_preview, parse_preview_id,
                                           read_page)
from gateway.segmentation.sources import parse_sources

routes = web.RouteTableDef()

PREVIEW_FIELDS = ("predicateExpression", "predicateType", "sources", "predicateModel")


def parse_preview(payload: Any) -> tuple[str, list[int] | None]:
    """The expression and sources of a create request (``sources`` defaults to ``"*"``)."""
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    check_fields(payload, PREVIEW_FIELDS)
    expression = payload.get("predicateExpression")
    if not isinstance(expression, str) or not expression.strip():
        raise BadRequest("predicateExpression must be a non-empty PQL text", code="invalid_expression",
                         extra={"position": 0})
    if payload.get("predicateType", "pql/text") != "pql/text":
        raise BadRequest('predicateType must be "pql/text"', code="invalid_predicate_type")
    return expression, parse_sources(payload.get("sources", "*"))


def _read_cursor(fields: dict[str, Any]) -> str:
    after = fields["after"]
    if not isinstance(after, str) or "\x00" in after:  # PostgreSQL text cannot hold U+0000
        raise ValueError("not an identity")
    return after


async def _page(request: web.Request, preview_id: int, limit: int, after: str | None) -> dict[str, Any]:
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    async with request.app[state.POOL].acquire() as conn:
        preview = await get_preview(conn, endpoint_id, preview_id)
        page = await read_page(conn, endpoint_id, preview, limit=limit, after=after)
    cursor = encode_cursor(None if page.last is None else {"after": page.last})
    links: dict[str, Any] = {}
    if cursor is not None:
        links["next"] = {"href": f"/api/preview/{preview_id}?{urlencode({'limit': limit, 'cursor': cursor})}"}
    result = {"previewId": str(preview_id), "state": page.state, "results": page.results,
              "page": {"size": len(page.results), "next": cursor}, "links": links}
    if page.error is not None:
        result["errors"] = [page.error]
    return result


@routes.post("/api/preview")
async def post_preview(request: web.Request) -> web.Response:
    """Create a preview (its expression is checked against its sources: 400 ``invalid_expression`` with
    its position); ``?wait=true`` answers its first page inline (``limit`` as on a read)."""
    check_parameters(request.query, ("wait", "limit"))
    wait = request.query.get("wait", "false")
    if wait not in ("true", "false"):
        raise BadRequest("wait must be true or false", code="invalid_wait")
    page = parse_page({key: value for key, value in request.query.items() if key == "limit"}, _read_cursor)
    try:
        payload = orjson.loads(await read_small_body(request))
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be JSON", code="invalid_json") from None
    expression, sources = parse_preview(payload)
    async with request.app[state.POOL].acquire() as conn:
        preview_id = await create_preview(conn, request[state.PRINCIPAL].endpoint_id, expression, sources,
                                          request.app[state.SETTINGS].preview_ttl)
    if wait == "true":
        return success(await _page(request, preview_id, page.limit, None))
    return success({"previewId": str(preview_id), "state": "RESULT_READY"})


@routes.get("/api/preview/{preview_id}")
async def get_preview_page(request: web.Request) -> web.Response:
    """A page of the preview: ``limit`` (1..1000, default 100) profiles after ``cursor``, by identity in
    byte order, each with the attributes its expression uses; evaluated now, so pages stay stable under
    concurrent pushes (gateway.segmentation.previews)."""
    check_parameters(request.query, PAGE_PARAMETERS)
    preview_id = parse_preview_id(request.match_info["preview_id"])
    page = parse_page(request.query, _read_cursor)
    return success(await _page(request, preview_id, page.limit, page.position))


@routes.delete("/api/preview/{preview_id}")
async def delete_preview_route(request: web.Request) -> web.Response:
    check_parameters(request.query, ())
    preview_id = parse_preview_id(request.match_info["preview_id"])
    await delete_preview(request.app[state.POOL], request[state.PRINCIPAL].endpoint_id, preview_id)
    return success({"previewId": str(preview_id), "deleted": True})


@routes.get("/api/estimate/{preview_id}")
async def get_estimate(request: web.Request) -> web.Response:
    """How many profiles the preview selects: exact if the count finishes within GATEWAY_ESTIMATE_EXACT_MS,
    else from a sample with its standard error and 95 % interval (gateway.segmentation.estimates)."""
    check_parameters(request.query, ())
    preview_id = parse_preview_id(request.match_info["preview_id"])
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    settings = request.app[state.SETTINGS]
    async with request.app[state.POOL].acquire() as conn:
        preview = await get_preview(conn, endpoint_id, preview_id)
        result = await estimate(conn, endpoint_id, preview, exact_ms=settings.estimate_exact_ms,
                                sample_rows=settings.estimate_sample_rows)
    return success({"previewId": str(preview_id), **result})
