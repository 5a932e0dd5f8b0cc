"""``/api/segments/{id}/uploads`` (upload history) and ``/api/segments/{id}/rejects`` (rejected rows, CSV)."""

from __future__ import annotations

from aiohttp import web

from gateway.ids import MAX_ID, parse_int
from gateway import state
from gateway.api.jobs import Gone
from gateway.api.manage import check_parameters
from gateway.errors import BadRequest
from gateway.http.csvout import stream_csv
from gateway.ingest.rejects import CSV_HEADER, REJECTS_QUERY
from gateway.http.responses import success
from gateway.audience.metadata import get_any_segment
from gateway.audience.segments import parse_segment_id
from gateway.ingest.history import entry_json, get_upload, list_uploads

routes = web.RouteTableDef()

DEFAULT_PAGE = 50
MAX_PAGE = 500


def _query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int:
    """A query parameter that must be an integer in [low, high] (400 otherwise); ``default`` if absent."""
    text = request.query.get(name)
    if text is None and default is not None:
        return default
    value = parse_int(text, low, high)
    if value is None:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", code=f"invalid_{name}")
    return value


@routes.get("/api/segments/{segment_id}/uploads")
async def get_uploads(request: web.Request) -> web.Response:
    """One entry per applied batch, newest first; ``cursor`` is the ``nextCursor`` of the previous page.
    Like every ``/api`` route, it shows a segment whatever its status (a deleted one too)."""
    check_parameters(request.query, ("limit", "cursor"))
    segment_id = parse_segment_id(request.match_info["segment_id"])
    limit = _query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    before = _query_int(request, "cursor", MAX_ID, 1, MAX_ID)
    pool = request.app[state.CONTROL_POOL]
    await get_any_segment(pool, request[state.PRINCIPAL].endpoint_id, segment_id)
    rows = await list_uploads(pool, segment_id, before, limit + 1)
    page = rows[:limit]
    next_cursor = str(page[-1]["id"]) if len(rows) > limit else None
    return success({"uploads": [entry_json(row) for row in page], "nextCursor": next_cursor})


@routes.get("/api/segments/{segment_id}/rejects")
async def get_rejects(request: web.Request) -> web.StreamResponse:
    """Every stored rejected row of one upload (``?upload=ID``, required) as CSV ``line,reason,raw``."""
    check_parameters(request.query, ("upload",))
    segment_id = parse_segment_id(request.match_info["segment_id"])
    upload_id = _query_int(request, "upload", None, 1, MAX_ID)
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    async with request.app[state.DATA_SLOTS].connection(request.app[state.POOL]) as conn:
        await get_any_segment(conn, endpoint_id, segment_id)
        row = await get_upload(conn, endpoint_id, segment_id, upload_id)
        if row["rejects_expired_at"] is not None:
            raise Gone(f"the rejected rows of upload {upload_id} were dropped after GATEWAY_REJECTS_TTL",
                       code="rejects_expired")
        return await stream_csv(request, conn, REJECTS_QUERY, CSV_HEADER,
                                filename=f"upload-{upload_id}-rejects.csv", args=(upload_id,))
