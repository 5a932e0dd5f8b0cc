"""``/api/segments/{id}/uploads`` (upload history) and ``/api/segments/{id}/rejects`` (rejected rows, CSV)."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from gateway.ids import MAX_ID, parse_int
from gateway import state
from gateway.api.jobs import Gone
from gateway.api.manage import check_parameters
from gateway.api.requests import storable_text
from gateway.errors import BadRequest, NotFound, invalid_code
from gateway.http.csvout import stream_csv
from gateway.http.paging import PAGE_PARAMETERS, encode_cursor, parse_page
from gateway.ingest.rejects import CSV_HEADER, REJECTS_QUERY, SHARE_CSV_HEADER, SHARE_REJECTS_QUERY
from gateway.http.responses import success
from gateway.audience.metadata import get_any_segment
from gateway.audience.segments import parse_segment_id
from gateway.ingest.history import entry_json, get_upload, list_uploads, share_summary

routes = web.RouteTableDef()


def _query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int:
    """A query parameter that must be an integer in [low, high] (400 otherwise); ``default`` if absent."""
    text = request.query.get(name)
    if text is None and default is not None:
        return default
    value = parse_int(text, low, high)
    if value is None:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", code=invalid_code(name))
    return value


def _before(fields: dict[str, Any]) -> int:
    """The id a page of history ended at (a cursor's ``before``): the next page is older."""
    before = fields["before"]
    if type(before) is not int or not 1 <= before <= MAX_ID:
        raise ValueError("before is not an id")
    return before


def _raw_id(cursor: str) -> int | None:
    """The cursor as this route gave it out before cursors were opaque: the id as digits (still accepted)."""
    return parse_int(cursor)


@routes.get("/api/segments/{segment_id}/uploads")
async def get_uploads(request: web.Request) -> web.Response:
    """One entry per applied batch, newest first, ``limit`` at a time (gateway.http.paging). Like every
    ``/api`` route, it shows a segment whatever its status (a deleted one too)."""
    check_parameters(request.query, PAGE_PARAMETERS)
    segment_id = parse_segment_id(request.match_info["segment_id"])
    page = parse_page(request.query, _before, legacy=_raw_id)
    pool = request.app[state.CONTROL_POOL]
    await get_any_segment(pool, request[state.PRINCIPAL].endpoint_id, segment_id)
    rows = await list_uploads(pool, segment_id, page.position or MAX_ID, page.limit + 1)
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    next_cursor = encode_cursor({"before": rows[-1]["id"]} if more else None)
    return success({"uploads": [entry_json(row) for row in rows], "nextCursor": next_cursor})


# the filters of /rejects: exactly one is given
REJECT_FILTERS = ("upload", "replaceSession", "sourceSegmentID")
_FILTER_HELP = ("upload=ID (one upload, an id from /uploads), replaceSession=ID (every batch of one REPLACE "
                "share: replaceSessionId in /uploads) or sourceSegmentID=TEXT (every upload with that "
                "sourceSegmentID)")
EXPIRED_HEADER = "X-Rejects-Expired-Uploads"  # uploads of a share whose rejects were dropped (TTL)
NOT_STORED_HEADER = "X-Rejects-Not-Stored"  # rejects of a share that were only counted (over a cap)


@routes.get("/api/segments/{segment_id}/rejects")
async def get_rejects(request: web.Request) -> web.StreamResponse:
    """Every stored rejected row of one upload (``?upload=ID``) as CSV ``line,reason,raw``, or of one share
    (``?replaceSession=ID`` or ``?sourceSegmentID=TEXT``: all its uploads) as CSV ``line,reason,raw,upload``
    by line, then upload. Exactly one filter is required.

    A share whose uploads all lost their rejects to GATEWAY_REJECTS_TTL is 410; when only some did, what
    remains streams and ``X-Rejects-Expired-Uploads`` says how many did not."""
    check_parameters(request.query, REJECT_FILTERS)
    given = [name for name in REJECT_FILTERS if name in request.query]
    if not given:
        raise BadRequest(f"say whose rejected rows: {_FILTER_HELP}", code="missing_filter")
    if len(given) > 1:
        raise BadRequest(f"give one filter, not {' and '.join(given)}: {_FILTER_HELP}", code="conflicting_filters")
    segment_id = parse_segment_id(request.match_info["segment_id"])
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    session_id = source = None
    if given == ["upload"]:
        upload_id = _query_int(request, "upload", None, 1, MAX_ID)
    elif given == ["replaceSession"]:
        session_id = _query_int(request, "replaceSession", None, 1, MAX_ID)
    else:
        source = storable_text(request.query["sourceSegmentID"], "sourceSegmentID")
        if not source:
            raise BadRequest("sourceSegmentID must not be empty", code=invalid_code("sourceSegmentID"))
    async with request.app[state.DATA_SLOTS].connection(request.app[state.POOL]) as conn:
        await get_any_segment(conn, endpoint_id, segment_id)
        if given == ["upload"]:
            return await _upload_rejects(request, conn, segment_id, endpoint_id, upload_id)
        share = await share_summary(conn, segment_id, endpoint_id, session_id, source)
        what = f"replace session {session_id}" if session_id is not None else f"sourceSegmentID {source!r}"
        if share["uploads"] == 0:
            raise NotFound(f"segment {segment_id} has no upload of {what}", code="upload_not_found")
        if share["expired"] == share["uploads"]:
            raise Gone(f"the rejected rows of {what} were dropped after GATEWAY_REJECTS_TTL",
                       code="rejects_expired")
        headers = {NOT_STORED_HEADER: str(share["not_stored"])}
        if share["expired"]:
            headers[EXPIRED_HEADER] = str(share["expired"])
        return await stream_csv(request, conn, SHARE_REJECTS_QUERY, SHARE_CSV_HEADER,
                                filename=f"segment-{segment_id}-rejects.csv", args=(segment_id, session_id, source),
                                headers=headers)


async def _upload_rejects(request: web.Request, conn: asyncpg.Connection, segment_id: int, endpoint_id: int,
                          upload_id: int) -> web.StreamResponse:
    row = await get_upload(conn, endpoint_id, segment_id, upload_id)
    if row["rejects_expired_at"] is not None:
        raise Gone(f"the rejected rows of upload {upload_id} were dropped after GATEWAY_REJECTS_TTL",
                   code="rejects_expired")
    return await stream_csv(request, conn, REJECTS_QUERY, CSV_HEADER,
                            filename=f"upload-{upload_id}-rejects.csv", args=(upload_id,))
