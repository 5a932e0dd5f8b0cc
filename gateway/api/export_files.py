"""``/api/export/jobs``: export jobs that write a segment's audience to a file (gateway.jobs.export_files),
shaped like the segmentation guide's export jobs; the file is downloaded at ``/api/export/jobs/{id}/file``.

Scopes (gateway.http.middleware.required_scope): reading needs write, changing (create, cancel) needs admin.
Another endpoint's job is answered exactly like a missing one (404).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import state
from gateway.api.manage import check_parameters, choice
from gateway.api.requests import check_fields, read_json_object
from gateway.audience.segments import parse_segment_id
from gateway.errors import BadRequest
from gateway.http.paging import PAGE_PARAMETERS, encode_cursor, parse_page
from gateway.http.responses import success
from gateway.ids import parse_int
from gateway.jobs import export_files
from gateway.jobs.export_files import FORMATS, STATUSES

routes = web.RouteTableDef()

STATUS_NAMES = {api: ours for ours, api in STATUSES.items()}
MAX_OFFSET = 1_000_000


def epoch_ms(moment: Any) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def describe(row: Any) -> dict[str, Any]:
    """A job as the answer shows it."""
    job_id = str(row["id"])
    running = row["status"] == "running"
    end = row["finished_at"] or (row["now"] if running else None)
    started = row["started_at"]
    total_time = None if started is None or end is None else int((end - started).total_seconds() * 1000)
    available = row["status"] == "complete" and not row["expired"] and row["data_dropped_at"] is None
    return {
        "id": job_id,
        "status": STATUSES[row["status"]],
        "fields": ",".join(row["fields"]) if row["fields"] is not None else None,
        "filter": {"segments": [{"segmentId": str(row["segment_id"])}],
                   **({"expression": row["expression"]} if row["expression"] is not None else {})},
        "format": row["format"],
        "progress": row["progress"],
        "metrics": {"totalTime": total_time, "totalExportedProfileCounter": row["row_count"],
                    "bytes": row["bytes"], "sha256": row["sha256"]},
        "file": {"url": f"/api/export/jobs/{job_id}/file", "name": row["file_name"],
                 "contentType": FORMATS[row["format"]], "bytes": row["bytes"], "sha256": row["sha256"],
                 "expiresAt": row["expires_at"].isoformat()} if available else None,
        "errors": [{"message": row["reason"]}] if row["status"] == "error" and row["reason"] else [],
        # an erasure deleted the file (it held an identity erased): the job stays SUCCEEDED, its file is gone
        "erased": {"erasureId": row["erased_by"], "at": row["erased_at"].isoformat()}
        if row["erased_by"] is not None else None,
        "creationTime": epoch_ms(row["created_at"]),
        "updateTime": epoch_ms(row["finished_at"] or row["started_at"] or row["created_at"]),
    }


def parse_filter(value: Any) -> tuple[int, str | None]:
    """``filter``: ``{"segments": [{"segmentId": "12"}], "expression": …}``: one segment (its id) and an
    optional PQL expression, as text or as the guide's ``{"type": "PQL", "format": "pql/text", "value"}``."""
    segments = value.get("segments") if isinstance(value, dict) else None
    if not isinstance(segments, list) or len(segments) != 1 or not isinstance(segments[0], dict):
        raise BadRequest('filter must be {"segments": [{"segmentId": "<id>"}]} with exactly one segment',
                         code="invalid_filter")
    unknown = sorted(set(value) - {"segments", "expression"})
    if unknown:
        raise BadRequest(f"filter does not take {', '.join(unknown)} (it takes segments and expression)",
                         code="invalid_filter")
    raw = segments[0].get("segmentId")
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise BadRequest("filter.segments[0].segmentId (an id) is required", code="invalid_filter")
    return parse_segment_id(str(raw)), parse_expression(value.get("expression"))


def parse_expression(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("type", "PQL") == "PQL" and value.get("format", "pql/text") == "pql/text":
        value = value.get("value")
    if value is None or isinstance(value, str):
        return value
    raise BadRequest('filter.expression must be PQL text (or {"type": "PQL", "format": "pql/text", "value": …})',
                     code="invalid_expression")


@routes.post("/api/export/jobs")
async def create_export(request: web.Request) -> web.Response:
    payload = await read_json_object(request)
    check_fields(payload, ("fields", "filter", "format"))
    file_format = payload.get("format", "csv")
    if not isinstance(file_format, str) or file_format not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}", code="invalid_format")
    fields = export_files.parse_fields(payload.get("fields"))
    segment_id, expression = parse_filter(payload.get("filter"))
    async with request.app[state.POOL].acquire() as conn:
        row = await export_files.create(conn, request[state.PRINCIPAL].endpoint_id, segment_id, fields, file_format,
                                        expression)
    return success(describe(row))


@routes.get("/api/export/jobs")
async def list_exports(request: web.Request) -> web.Response:
    """Newest first; ``status`` filters; ``limit`` with ``cursor`` (our paging) or ``offset`` (the guide's)."""
    query = request.query
    check_parameters(query, ("status", "offset", *PAGE_PARAMETERS))
    status = choice(query, "status", STATUS_NAMES)
    page = parse_page(query, lambda fields: int(fields["id"]))
    offset = 0
    if "offset" in query:
        offset = parse_int(query["offset"], 0, MAX_OFFSET)
        if offset is None or page.position is not None:
            raise BadRequest(f"offset must be an integer from 0 to {MAX_OFFSET}, and not given with cursor",
                             code="invalid_offset")
    rows = await export_files.listing(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id,
                                      STATUS_NAMES.get(status) if status else None, page.position,
                                      page.limit + 1, offset)
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    return success({"jobs": [describe(row) for row in rows],
                    "nextCursor": encode_cursor({"id": rows[-1]["id"]} if more else None)})


@routes.get("/api/export/jobs/{export_id}")
async def get_export(request: web.Request) -> web.Response:
    job_id = export_files.parse_job_id(request.match_info["export_id"])
    row = await export_files.get(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id, job_id)
    return success(describe(row))


@routes.delete("/api/export/jobs/{export_id}")
async def cancel_export(request: web.Request) -> web.Response:
    job_id = export_files.parse_job_id(request.match_info["export_id"])
    async with request.app[state.POOL].acquire() as conn:
        row = await export_files.cancel(conn, request.app[state.SETTINGS], request[state.PRINCIPAL].endpoint_id,
                                        job_id)
    return success(describe(row))


@routes.get("/api/export/jobs/{export_id}/file")
async def download_export(request: web.Request) -> web.FileResponse:
    """The file, by aiohttp's own file response (Range, ETag, Last-Modified, Content-Length)."""
    job_id = export_files.parse_job_id(request.match_info["export_id"])
    row = await export_files.get(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id, job_id)
    path = export_files.file_path(request.app[state.SETTINGS], row)
    return web.FileResponse(path, headers={
        "Content-Type": FORMATS[row["format"]],
        "Content-Disposition": f'attachment; filename="{path.name}"'})
