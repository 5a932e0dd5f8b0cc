"""``/api/segment/definitions``: segment definitions (gateway.segmentation.definitions), shaped like the hosted
Segmentation Service's, in our JSON envelope.

Scopes (gateway.http.middleware.required_scope): reading — the GETs, ``validate`` and ``bulk-get`` — needs
write, changing needs admin. Another endpoint's definition is answered like a missing one (404).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway import state
from gateway.api.manage import check_parameters
from gateway.api.segments import changing_segments
from gateway.api.requests import check_fields, read_json_object, required_name, storable_text
from gateway.errors import BadRequest, GatewayError
from gateway.http.paging import MAX_LIMIT, OFFSET_PARAMETERS, next_offset_cursor, parse_offset_page
from gateway.http.responses import success
from gateway.ids import parse_int
from gateway.segmentation import definitions
from gateway.segmentation.definitions import (EXPRESSION_FORMAT, EXPRESSION_TYPE, NewDefinition, change_definition,
                                              check, create_definition, definition_page, delete_definition,
                                              describe, get_definition, get_definitions, parse_definition_id,
                                              parse_sort, show_sort)
from gateway.segmentation.estimates import estimate_expression
from gateway.segmentation.sources import MERGE_POLICY, parse_sources

routes = web.RouteTableDef()
PATH = "/api/segment/definitions"
CREATE_FIELDS = ("name", "description", "expression", "sources", "evaluationInfo", "mergePolicy")
# PATCH changes the fields sent and no other (the hosted service's PATCH overwrites the whole object)
CHANGE_FIELDS = ("name", "description", "expression", "sources", "evaluationInfo")


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest("description must be a string", code="invalid_field")
    return storable_text(value, "description")


def _expression(value: Any) -> str:
    """``{"type": "PQL", "format": "pql/text", "value": "…"}`` (type and format may be left out) → the text."""
    shape = f'expression must be {{"type": "{EXPRESSION_TYPE}", "format": "{EXPRESSION_FORMAT}", "value": "<PQL>"}}'
    if not isinstance(value, dict) or set(value) - {"type", "format", "value"}:
        raise BadRequest(shape, code="invalid_expression")
    if (value.get("type", EXPRESSION_TYPE), value.get("format", EXPRESSION_FORMAT)) != (EXPRESSION_TYPE,
                                                                                       EXPRESSION_FORMAT):
        raise BadRequest(f"{shape}: only type {EXPRESSION_TYPE} in format {EXPRESSION_FORMAT} is supported",
                         code="invalid_expression")
    text = value.get("value")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(shape, code="invalid_expression")
    return storable_text(text, "expression")


def _batch_enabled(value: Any) -> bool:
    """``evaluationInfo``: batch evaluation only (``{"batch": {"enabled": true}}``; batch when empty)."""
    if value is None:
        return True
    modes = ("batch", "continuous", "synchronous")
    if not isinstance(value, dict) or set(value) - set(modes) or not all(
            isinstance(value[mode], dict) and isinstance(value[mode].get("enabled", False), bool) for mode in value):
        raise BadRequest('evaluationInfo must be {"batch": {"enabled": true|false}}', code="invalid_evaluation_info")
    if any(value.get(mode, {}).get("enabled") for mode in modes[1:]):
        raise BadRequest("only batch evaluation is supported (segment jobs); continuous and synchronous are not",
                         code="invalid_evaluation_info")
    return value.get("batch", {}).get("enabled", True)


def _sources(payload: dict[str, Any]) -> list[int] | None:
    """``sources``: ``"*"`` when left out."""
    return parse_sources(payload.get("sources", "*"))


def parse_new(payload: dict[str, Any]) -> NewDefinition:
    check_fields(payload, CREATE_FIELDS)
    if payload.get("mergePolicy", MERGE_POLICY) != MERGE_POLICY:
        raise BadRequest(f'mergePolicy must be "{MERGE_POLICY}"', code="invalid_merge_policy")
    return NewDefinition(name=required_name(payload.get("name")), description=_description(payload.get("description")),
                         expression=_expression(payload.get("expression")), sources=_sources(payload),
                         batch_enabled=_batch_enabled(payload.get("evaluationInfo")))


def parse_changes(payload: dict[str, Any]) -> dict[str, Any]:
    """The fields a PATCH sends, as the domain names them; the others stay as they are."""
    check_fields(payload, CHANGE_FIELDS)
    readers = {"name": ("name", required_name), "description": ("description", _description),
               "expression": ("expression", _expression), "sources": ("sources", parse_sources),
               "evaluationInfo": ("batch_enabled", _batch_enabled)}
    return {readers[field][0]: readers[field][1](value) for field, value in payload.items()}


@routes.post(PATH)
async def post_definition(request: web.Request) -> web.Response:
    """Create a definition and its audience (a Queries segment, ``audienceSegmentId``)."""
    check_parameters(request.query, ())
    new = parse_new(await read_json_object(request))
    with changing_segments(request):  # a definition's audience is a segment
        async with request.app[state.POOL].acquire() as conn:
            row = await create_definition(conn, request[state.PRINCIPAL].endpoint_id, new)
    return success(describe(row))


@routes.get(PATH)
async def list_definitions(request: web.Request) -> web.Response:
    """The endpoint's definitions: ``start`` (0-based) or ``cursor``, ``limit``, ``sort``
    (``updateTime:desc`` by default), ``name`` (contained, any case). Result ``{"segments": [...], "page":
    {...}, "link": {"next"}, "nextCursor"}``."""
    query = request.query
    check_parameters(query, ("sort", "name", *OFFSET_PARAMETERS))
    page = parse_offset_page(query)
    start = page.position or 0
    sort = parse_sort(query.get("sort"))
    name = storable_text(query["name"], "name") if "name" in query else None
    async with request.app[state.POOL].acquire() as conn:
        result = await definition_page(conn, request[state.PRINCIPAL].endpoint_id, name=name, sort=sort,
                                       start=start, limit=page.limit)
    cursor = next_offset_cursor(page, result.total)
    kept = {key: query[key] for key in ("sort", "name", "limit") if key in query}
    return success({
        "segments": [describe(row) for row in result.rows],
        "page": {"totalCount": result.total, "totalPages": -(-result.total // page.limit),
                 "sortField": sort[0][0], "sort": show_sort(sort), "pageSize": len(result.rows),
                 "limit": page.limit, "start": start},
        "link": {"next": None if cursor is None else f"{PATH}?{urlencode({**kept, 'cursor': cursor})}"},
        "nextCursor": cursor,
    })


@routes.get(PATH + "/{definition_id}")
async def get_one(request: web.Request) -> web.Response:
    check_parameters(request.query, ())
    definition_id = parse_definition_id(request.match_info["definition_id"])
    row = await get_definition(request.app[state.POOL], request[state.PRINCIPAL].endpoint_id, definition_id)
    return success(describe(row))


@routes.patch(PATH + "/{definition_id}")
async def patch_definition(request: web.Request) -> web.Response:
    """Change the fields sent (name, description, expression, sources, evaluationInfo), no other; a new
    expression takes effect at the next segment job."""
    check_parameters(request.query, ())
    definition_id = parse_definition_id(request.match_info["definition_id"])
    changes = parse_changes(await read_json_object(request))
    with changing_segments(request):  # a rename renames its audience
        async with request.app[state.POOL].acquire() as conn:
            row = await change_definition(conn, request[state.PRINCIPAL].endpoint_id, definition_id, changes)
    return success(describe(row))


@routes.delete(PATH + "/{definition_id}")
async def delete_one(request: web.Request) -> web.Response:
    """Remove the definition and soft-delete its audience; answers the definition as it was."""
    check_parameters(request.query, ())
    definition_id = parse_definition_id(request.match_info["definition_id"])
    with changing_segments(request):  # deleting it deletes its audience
        async with request.app[state.POOL].acquire() as conn:
            row = await delete_definition(conn, request[state.PRINCIPAL].endpoint_id, definition_id)
    return success(describe(row))


@routes.post(PATH + "/validate")
async def validate(request: web.Request) -> web.Response:
    """Check ``{expression, sources}`` as a create would, creating nothing: ``{valid, errors: [{code,
    message, position}], attributes, estimate?}`` (the attributes it names; position null when not about one
    place). A valid expression's answer has the ``estimate`` of ``/api/estimate`` (exact within
    GATEWAY_ESTIMATE_EXACT_MS, else sampled with its interval: that budget bounds the time it adds)."""
    check_parameters(request.query, ())
    payload = await read_json_object(request)
    check_fields(payload, ("expression", "sources"))
    expression = _expression(payload.get("expression"))
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    settings = request.app[state.SETTINGS]
    try:
        sources = _sources(payload)
        async with request.app[state.POOL].acquire() as conn:
            attributes = (await check(conn, endpoint_id, expression, sources)).attributes
            size = await estimate_expression(conn, endpoint_id, expression, sources, dt.datetime.now(dt.UTC),
                                             exact_ms=settings.estimate_exact_ms,
                                             sample_rows=settings.estimate_sample_rows)
    except BadRequest as exc:
        position = exc.details.get("position", exc.extra.get("position"))  # check's, or prepare's (previews)
        error = {"code": exc.code, "message": exc.message, "position": position}
        return success({"valid": False, "errors": [error], "attributes": []})
    return success({"valid": True, "errors": [], "attributes": attributes, "estimate": size})


@routes.post(PATH + "/bulk-get")
async def bulk_get(request: web.Request) -> web.Response:
    """``{"ids": [{"id": "…"}, …]}`` (at most 1000) → 207 ``{"results": {id: definition or {"error"}}}``."""
    check_parameters(request.query, ())
    payload = await read_json_object(request)
    check_fields(payload, ("ids",))
    items = payload.get("ids")
    if (not isinstance(items, list) or not 0 < len(items) <= MAX_LIMIT
            or not all(isinstance(item, dict) and set(item) == {"id"} and isinstance(item["id"], (str, int))
                       and not isinstance(item["id"], bool) for item in items)):
        raise BadRequest(f'ids must be a list of 1 to {MAX_LIMIT} objects {{"id": "<definition id>"}}',
                         code="invalid_ids")
    asked = [str(item["id"]) for item in items]
    numbers = {text: parse_int(text) for text in asked}
    async with request.app[state.POOL].acquire() as conn:
        found = await get_definitions(conn, request[state.PRINCIPAL].endpoint_id,
                                      [n for n in numbers.values() if n is not None])
    results: dict[str, Any] = {}
    for text in asked:
        row = found.get(numbers[text]) if numbers[text] is not None else None
        results[text] = describe(row) if row is not None else _error(definitions.not_found(text))
    return success({"results": results}, status=207)


def _error(exc: GatewayError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message}}
