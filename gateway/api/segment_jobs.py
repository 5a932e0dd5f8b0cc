"""``/api/segment/jobs``: segment jobs that evaluate definitions into their Queries audiences
(gateway.segmentation.segment_jobs; the work is gateway.segmentation.evaluate, run by the job queue).

Scopes as the rest of ``/api``: reading needs write, creating and canceling need admin. Another endpoint's
job, or definition, is answered exactly like a missing one (404).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from gateway import state
from gateway.api.manage import check_parameters, choice
from gateway.api.requests import check_fields, read_small_body
from gateway.errors import BadRequest
from gateway.http.paging import PAGE_PARAMETERS, encode_cursor, parse_page
from gateway.http.responses import success
from gateway.ids import parse_int
from gateway.segmentation.segment_jobs import (ALL_DEFINITIONS, STATUSES, cancel_job, check_definitions, create_job,
                                               describe, get_job, list_jobs, parse_job_id, queue_statuses)

routes = web.RouteTableDef()


def parse_segments(payload: Any) -> list[int] | None:
    """``{"segments": [{"segmentId": …}, …]}`` or the bare array: definition ids in the order given (each
    once), or None for ``[{"segmentId": "*"}]`` (every batch-enabled definition when the job runs)."""
    items = payload.get("segments") if isinstance(payload, dict) else payload
    if isinstance(payload, dict):
        check_fields(payload, ("segments",))
    if not isinstance(items, list) or not items:
        raise BadRequest('segments must be a non-empty list of {"segmentId": "<definition id>"} or '
                         '[{"segmentId": "*"}]', code="invalid_segments")
    ids: list[int] = []
    every = False
    for item in items:
        raw = item.get("segmentId") if isinstance(item, dict) else None
        text = str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None
        if text == ALL_DEFINITIONS:
            every = True
            continue
        number = parse_int(text)
        if number is None:
            raise BadRequest(f'segments: {orjson.dumps(item).decode()} has no segmentId (a definition id or "*")',
                             code="invalid_segments")
        if number not in ids:
            ids.append(number)
    if every and ids:
        raise BadRequest('segments: "*" already names every definition; send it alone', code="invalid_segments")
    return None if every else ids


@routes.post("/api/segment/jobs")
async def post_job(request: web.Request) -> web.Response:
    """Queue a segment job of the definitions given (``"*"``: every batch-enabled definition of the endpoint
    when the job runs); answers the job. 404 for a definition the endpoint does not have."""
    check_parameters(request.query, ())
    try:
        payload = orjson.loads(await read_small_body(request))
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be JSON", code="invalid_json") from None
    definition_ids = parse_segments(payload)
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    async with request.app[state.POOL].acquire() as conn:
        if definition_ids is not None:
            await check_definitions(conn, endpoint_id, definition_ids)
        job_id = await create_job(conn, endpoint_id, definition_ids, source="api")
        return success(describe(await get_job(conn, endpoint_id, job_id)))


def _read_cursor(fields: dict[str, Any]) -> int:
    before = fields["before"]
    if not isinstance(before, int) or isinstance(before, bool) or before < 1:
        raise ValueError("not a job id")
    return before


@routes.get("/api/segment/jobs")
async def list_segment_jobs(request: web.Request) -> web.Response:
    """The endpoint's segment jobs, newest first; ``status`` (one of the job statuses), ``limit`` and
    ``cursor`` (gateway.http.paging). Result: ``{"children": [...], "_page": {"totalCount", "pageSize",
    "next"}, "_links": {"next": {"href"}}}`` (``next``: the cursor of the next page, null on the last)."""
    query = request.query
    check_parameters(query, ("status", *PAGE_PARAMETERS))
    status = choice(query, "status", STATUSES)
    page = parse_page(query, _read_cursor)
    async with request.app[state.CONTROL_POOL].acquire() as conn:
        result = await list_jobs(conn, request[state.PRINCIPAL].endpoint_id,
                                 statuses=None if status is None else queue_statuses(status), limit=page.limit,
                                 before=page.position)
    cursor = encode_cursor(None if result.next_before is None else {"before": result.next_before})
    links: dict[str, Any] = {}
    if cursor is not None:
        parameters = {"limit": page.limit, "cursor": cursor, **({"status": status} if status else {})}
        links["next"] = {"href": f"{request.path}?{urlencode(parameters)}"}
    return success({"children": [describe(row) for row in result.rows],
                    "_page": {"totalCount": result.total, "pageSize": len(result.rows), "next": cursor},
                    "_links": links})


@routes.get("/api/segment/jobs/{job_id}")
async def get_segment_job(request: web.Request) -> web.Response:
    check_parameters(request.query, ())
    job_id = parse_job_id(request.match_info["job_id"])
    return success(describe(await get_job(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id,
                                          job_id)))


@routes.delete("/api/segment/jobs/{job_id}")
async def delete_segment_job(request: web.Request) -> web.Response:
    """Cancel a queued or running job: its work stops and every audience keeps its previous members (a job
    changes its audiences only when it completes). A job that has already ended is answered as it is."""
    check_parameters(request.query, ())
    job_id = parse_job_id(request.match_info["job_id"])
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    async with request.app[state.POOL].acquire() as conn:
        await cancel_job(conn, endpoint_id, job_id)
        return success(describe(await get_job(conn, endpoint_id, job_id)))
