"""``/api/config/schedules``: cron schedules of segment jobs (gateway.segmentation.schedules), shaped like
the hosted Segmentation Service's; ours may be several per endpoint, down to one a minute, effective at once.

Scopes (gateway.http.middleware.required_scope): reading — the GETs and ``validate`` — needs write, changing
needs admin. Another endpoint's schedule is answered like a missing one (404).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway import state
from gateway.api.manage import check_parameters
from gateway.api.requests import check_fields, read_json_object, required_name
from gateway.errors import BadRequest
from gateway.http.paging import OFFSET_PARAMETERS, next_offset_cursor, parse_offset_page
from gateway.http.responses import success
from gateway.segmentation.definitions import epoch_ms
from gateway.segmentation.schedules import (SCHEDULE_TYPE, STATES, NewSchedule, change_schedule, create_schedule,
                                            database_now, delete_schedule, describe, get_schedule, next_runs,
                                            parse_cron, parse_schedule_id, parse_segments, schedule_page)

routes = web.RouteTableDef()
PATH = "/api/config/schedules"
CREATE_FIELDS = ("name", "type", "properties", "schedule", "state")
CHANGE_FIELDS = ("name", "properties", "schedule", "state")  # PATCH: these, only those sent
VALIDATE_FIELDS = ("schedule", "count")
DEFAULT_RUNS, MAX_RUNS = 5, 50  # next run times ``validate`` answers by default, and at most


def _state(value: Any) -> str:
    if value not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}", code="invalid_state")
    return value


def _segments_value(properties: Any) -> Any:
    if not isinstance(properties, dict) or set(properties) != {"segments"}:
        raise BadRequest('properties must be {"segments": ["*"] or [definition ids]}', code="invalid_properties")
    return properties["segments"]


async def _read_changes(request: web.Request, conn: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """The fields sent, checked, as the domain names them."""
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    changes: dict[str, Any] = {}
    if "name" in payload:
        changes["name"] = required_name(payload["name"])
    if "state" in payload:
        changes["state"] = _state(payload["state"])
    if "schedule" in payload:
        changes["schedule"] = parse_cron(payload["schedule"], await database_now(conn))
    if "properties" in payload:
        changes["segments"] = await parse_segments(conn, endpoint_id, _segments_value(payload["properties"]))
    return changes


@routes.post(PATH)
async def post_schedule(request: web.Request) -> web.Response:
    """Create a schedule (``state`` inactive unless given)."""
    check_parameters(request.query, ())
    payload = await read_json_object(request)
    check_fields(payload, CREATE_FIELDS)
    if payload.get("type", SCHEDULE_TYPE) != SCHEDULE_TYPE:
        raise BadRequest(f'type must be "{SCHEDULE_TYPE}"', code="invalid_type")
    for field in ("name", "properties", "schedule"):
        if field not in payload:
            raise BadRequest(f"{field} is required", code=f"invalid_{field}")
    async with request.app[state.POOL].acquire() as conn:
        fields = await _read_changes(request, conn, payload)
        new = NewSchedule(fields["name"], fields["segments"], fields["schedule"], fields.get("state", "inactive"))
        row = await create_schedule(conn, request[state.PRINCIPAL].endpoint_id, new)
    return success(describe(row))


@routes.get(PATH)
async def list_schedules(request: web.Request) -> web.Response:
    """The endpoint's schedules in id order: ``start`` (0-based) or ``cursor``, and ``limit``. Result
    ``{"children": [...], "_page": {...}, "_links": {"next"}, "nextCursor"}``."""
    check_parameters(request.query, OFFSET_PARAMETERS)
    page = parse_offset_page(request.query)
    async with request.app[state.POOL].acquire() as conn:
        rows, total = await schedule_page(conn, request[state.PRINCIPAL].endpoint_id, page.position or 0,
                                          page.limit)
    cursor = next_offset_cursor(page, total)
    kept = {"limit": request.query["limit"]} if "limit" in request.query else {}
    return success({
        "children": [describe(row) for row in rows],
        "_page": {"totalCount": total, "pageSize": len(rows), "limit": page.limit, "start": page.position or 0},
        "_links": {"next": None if cursor is None else f"{PATH}?{urlencode({**kept, 'cursor': cursor})}"},
        "nextCursor": cursor,
    })


@routes.post(PATH + "/validate")
async def validate(request: web.Request) -> web.Response:
    """Check a cron as a create would, creating nothing: ``{"schedule": "<cron>", "count": 5}`` → ``{valid,
    errors: [{code, message}], nextRunTimes}`` (epoch ms, UTC, the first ``count`` times after the
    database's now: when the sweep would run it). So a form can show the next runs as the user types."""
    check_parameters(request.query, ())
    payload = await read_json_object(request)
    check_fields(payload, VALIDATE_FIELDS)
    text = payload.get("schedule")
    if not isinstance(text, str):
        raise BadRequest("schedule is required: a cron string", code="invalid_schedule")
    count = payload.get("count", DEFAULT_RUNS)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_RUNS:
        raise BadRequest(f"count must be an integer from 1 to {MAX_RUNS}", code="invalid_count")
    now = await database_now(request.app[state.POOL])
    try:
        cron = parse_cron(text, now)
    except BadRequest as exc:
        return success({"valid": False, "errors": [{"code": exc.code, "message": exc.message}], "nextRunTimes": []})
    return success({"valid": True, "errors": [],
                    "nextRunTimes": [epoch_ms(at) for at in next_runs(cron, now, count)]})


@routes.get(PATH + "/{schedule_id}")
async def get_one(request: web.Request) -> web.Response:
    check_parameters(request.query, ())
    schedule_id = parse_schedule_id(request.match_info["schedule_id"])
    row = await get_schedule(request.app[state.POOL], request[state.PRINCIPAL].endpoint_id, schedule_id)
    return success(describe(row))


@routes.patch(PATH + "/{schedule_id}")
async def patch_schedule(request: web.Request) -> web.Response:
    """Change the fields sent (name, properties, schedule, state), no other; a new cron or state takes
    effect at once (``nextRunTime`` computed again)."""
    check_parameters(request.query, ())
    schedule_id = parse_schedule_id(request.match_info["schedule_id"])
    payload = await read_json_object(request)
    check_fields(payload, CHANGE_FIELDS)
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    async with request.app[state.POOL].acquire() as conn:
        await get_schedule(conn, endpoint_id, schedule_id)  # 404 before 400 for another endpoint's
        changes = await _read_changes(request, conn, payload)
        row = await change_schedule(conn, endpoint_id, schedule_id, changes)
    return success(describe(row))


@routes.delete(PATH + "/{schedule_id}")
async def delete_one(request: web.Request) -> web.Response:
    """Remove the schedule (its jobs stay); answers it as it was."""
    check_parameters(request.query, ())
    schedule_id = parse_schedule_id(request.match_info["schedule_id"])
    async with request.app[state.POOL].acquire() as conn:
        row = await delete_schedule(conn, request[state.PRINCIPAL].endpoint_id, schedule_id)
    return success(describe(row))
