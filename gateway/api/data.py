"""``/v1/segments/{id}/data``: ``POST|PUT|DELETE`` push CSV batches (ADD, REPLACE, REMOVE); ``GET`` pulls.

A push is validated as far as possible before its body is read (batch parameters, content type, declared
length, the segment), then streams: body → parser → COPY into ``incoming`` → one merge.
"""

from __future__ import annotations

import time

from aiohttp import web
from multidict import MultiMapping

from gateway import state
from gateway.ops import metrics
from gateway.api.requests import storable_text
from gateway.audience.changefeed import declare_writes
from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from gateway.db.csvcopy import streaming_transaction
from gateway.http.csvout import stream_csv
from gateway.ingest.upload import ColumnRules, Upload
from gateway.ingest.apply import (add_direct, add_members, batch_result, drop_suppressed,
                                  lock_to_apply, plan_upload, remove_members, stream_incoming)
from gateway.ingest.rejects import RejectSink
from gateway.ingest.replace import push_replace
from gateway.http.responses import success
from gateway.audience.segments import direct_export, get_pushable_segment, parse_segment_id
from gateway.ingest.history import BatchInfo, Operation, UploadEntry

routes = web.RouteTableDef()

CSV_CONTENT_TYPES = frozenset({"text/csv", "text/plain", "application/csv", "application/octet-stream", ""})
MAX_TOTAL_BATCHES = 1_000_000
_ACTION_OF_METHOD = {"POST": Operation.ADD, "PUT": Operation.REPLACE, "DELETE": Operation.REMOVE}
# query parameters recorded with the batch (BatchInfo field: parameter)
_RECORDED = {"ids": "ids", "source_endpoint_id": "sourceEndpointID", "source_segment_id": "sourceSegmentID",
             "category": "category"}


def parse_batch_info(query: MultiMapping[str], operation: Operation) -> BatchInfo:
    # An empty value counts as absent (``totalBatchCount=&currentBatchNumber=``: T = k = 1).
    total, number = query.get("totalBatchCount") or None, query.get("currentBatchNumber") or None
    if (total is None) != (number is None):
        raise BadRequest("totalBatchCount and currentBatchNumber go together: send both or neither",
                         code="invalid_batch")
    if total is None or number is None:
        total_count, batch_number = 1, 1
    else:
        total_count, batch_number = _positive(total, "totalBatchCount"), _positive(number, "currentBatchNumber")
        if total_count > MAX_TOTAL_BATCHES:
            raise BadRequest(f"totalBatchCount must be at most {MAX_TOTAL_BATCHES}", code="invalid_batch")
        if batch_number > total_count:
            raise BadRequest("currentBatchNumber must not exceed totalBatchCount", code="invalid_batch")
    action = query.get("shareAction")
    if action is not None and action.strip().upper() != operation.value:
        raise BadRequest(f"shareAction {action!r} does not match this method ({operation.value})",
                         code="share_action_mismatch")
    return BatchInfo(total=total_count, number=batch_number,
                     **{field: storable_text(query.get(name, ""), name) for field, name in _RECORDED.items()})


def _positive(text: str, name: str, digits: int = 9) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > digits or int(text) < 1:
        raise BadRequest(f"{name} must be a positive integer" + (f" of at most {digits} digits" if digits > 9 else ""),
                         code="invalid_batch")
    return int(text)


def parse_first_line(query: MultiMapping[str]) -> int | None:
    """``firstLine``: the line of the pushed file on which this body's first data row starts (the first
    record after the header; blank lines are not rows). Rejected rows are then numbered by the file's lines
    (a row starting k lines after the first data row in the body: ``firstLine + k``), else by the body's.
    An empty value counts as absent, like the other batch parameters."""
    text = query.get("firstLine") or None
    return None if text is None else _positive(text, "firstLine", digits=15)


def check_body_headers(request: web.Request, max_body_bytes: int) -> bool:
    """415 for anything but CSV-ish bodies or unknown encodings; 413 for a declared length over the limit.

    Returns whether the body is gzip-encoded.
    """
    content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if content_type not in CSV_CONTENT_TYPES:
        raise UnsupportedMediaType(f"the body must be CSV (text/csv), not {content_type}")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding} is not supported (use gzip or none)")
    gzipped = encoding != "identity"
    if not gzipped and request.content_length is not None and request.content_length > max_body_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_body_bytes} bytes; nothing was applied")
    return gzipped


async def push(request: web.Request) -> web.Response:
    operation = _ACTION_OF_METHOD[request.method]
    segment_id = parse_segment_id(request.match_info["segment_id"])
    batch = parse_batch_info(request.query, operation)
    first_line = parse_first_line(request.query)
    settings = request.app[state.SETTINGS]
    gzipped = check_body_headers(request, settings.max_body_bytes)
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    await get_pushable_segment(request.app[state.CONTROL_POOL], endpoint_id, segment_id)

    started = time.perf_counter()
    rejects = RejectSink(segment_id, endpoint_id, max_per_segment=settings.rejects_max_per_segment,
                         max_per_endpoint=settings.rejects_max_per_endpoint)
    upload = Upload(request.content, gzipped=gzipped, max_body_bytes=settings.max_body_bytes,
                    max_field_bytes=settings.max_field_bytes, on_reject=rejects.add,
                    idle_timeout=settings.client_idle_timeout, first_line=first_line)
    entry = UploadEntry(segment_id, operation, batch, request[state.REQUEST_ID], upload, rejects)
    with metrics.UPLOADS_IN_FLIGHT.track_inprogress():
        header = await upload.read_header()
        rules = ColumnRules(ids=batch.ids or None, max_attributes=settings.max_attributes,
                            extends=operation is not Operation.REMOVE)
        async with request.app[state.DATA_SLOTS].connection(request.app[state.POOL]) as conn:
            plan = await plan_upload(conn, endpoint_id, segment_id, header, rules)
            if operation is Operation.REPLACE:
                result = await push_replace(conn, endpoint_id, segment_id, batch, upload, header, rules, plan,
                                            settings.replace_session_ttl, entry)
            elif (operation is Operation.ADD and settings.add_read_ahead_bytes
                  and await upload.read_ahead(settings.add_read_ahead_bytes)):
                async with conn.transaction():  # the body is in memory: lock first, then parse and apply
                    await declare_writes(conn, endpoint_id)
                    plan = await lock_to_apply(conn, endpoint_id, segment_id, header, rules, None, upload)
                    result = batch_result(segment_id, upload,
                                          numAdded=await add_direct(conn, endpoint_id, segment_id, plan, upload, entry))
            else:
                async with conn.transaction():
                    await declare_writes(conn, endpoint_id)
                    await stream_incoming(conn, upload, plan, rejects)
                    plan = await lock_to_apply(conn, endpoint_id, segment_id, header, rules, plan, upload)
                    if operation is Operation.ADD:
                        await drop_suppressed(conn, endpoint_id, plan, upload)
                    await rejects.flush(conn)  # rows rejected under the lock (see lock_to_apply)
                    if operation is Operation.ADD:
                        result = batch_result(segment_id, upload,
                                              numAdded=await add_members(conn, segment_id, plan, entry))
                    else:
                        result = batch_result(segment_id, upload,
                                              numRemoved=await remove_members(conn, segment_id, plan, entry))
    metrics.record_push(request.method, upload.received, upload.invalid, upload.body_bytes, result,
                        time.perf_counter() - started)
    stats = request[state.STATS]
    stats.rows, stats.bytes_received = upload.received, upload.body_bytes
    return success(result)


@routes.get("/v1/segments/{segment_id}/data")
async def pull(request: web.Request) -> web.StreamResponse:
    """The audience as CSV when it has 1 to GATEWAY_SYNC_EXPORT_MAX_ROWS members; else 501 (use a job).

    The segment's row is share-locked first (see the query), then one COPY reads one snapshot: the answer
    is the old audience or the new one, never a mix, and never an empty table mid-swap.
    """
    segment_id = parse_segment_id(request.match_info["segment_id"])
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    limit = request.app[state.SETTINGS].sync_export_max_rows
    slots = request.app[state.DATA_SLOTS]
    async with slots.connection(request.app[state.POOL]) as conn, streaming_transaction(conn):
        query, attributes = await direct_export(conn, endpoint_id, segment_id, limit)
        return await stream_csv(request, conn, query, attributes, filename=f"segment-{segment_id}.csv")


routes.post("/v1/segments/{segment_id}/data")(push)
routes.put("/v1/segments/{segment_id}/data")(push)
routes.delete("/v1/segments/{segment_id}/data")(push)
