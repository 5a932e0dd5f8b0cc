"""``/v1/segments``: create, list and describe segments (Exchange Segment API)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from gateway import state
from gateway.api.requests import optional_string, read_json_object
from gateway.errors import BadRequest
from gateway.ingest.upload import IDENTITY_HASHINGS
from gateway.http.responses import success
from gateway.audience.segments import (DEFAULT_TYPE, SEGMENT_TYPES, NewSegment,
                                       create_segment, get_segment, parse_segment_id)

routes = web.RouteTableDef()
MAX_IDEMPOTENCY_KEY = 255


def parse_identity_hashing(payload: dict[str, Any]) -> str | None:
    """``identityHashing`` (an extension of the Segment API): ``"sha256"`` stores identities hashed; absent,
    null or ``"none"``: as sent."""
    value = payload.get("identityHashing")
    if value is None or value == "none":
        return None
    if value not in IDENTITY_HASHINGS:
        raise BadRequest(f"identityHashing must be one of {', '.join(IDENTITY_HASHINGS)}, \"none\" or null",
                         code="invalid_identity_hashing")
    return value


@contextmanager
def changing_segments(request: web.Request) -> Iterator[None]:
    """Around a handler's writes that may create a segment or change a name, type or status: afterwards
    (committed or not), this process's cached ``GET /v1/segments`` of the endpoint is dropped, so that
    the client's next list shows its change (gateway.audience.segment_lists; other processes hear it)."""
    try:
        yield
    finally:
        request.app[state.SEGMENT_LISTS].forget(request[state.PRINCIPAL].endpoint_id)


@routes.post("/v1/segments")
async def post_segment(request: web.Request) -> web.Response:
    payload = await read_json_object(request)
    name = optional_string(payload, "name")
    if not name.strip():
        raise BadRequest("name is required and must not be empty", code="invalid_name")
    segment_type = optional_string(payload, "type", DEFAULT_TYPE)
    if segment_type not in SEGMENT_TYPES:
        raise BadRequest(f"type must be one of {', '.join(SEGMENT_TYPES)}", code="invalid_type")
    new = NewSegment(name=name, description=optional_string(payload, "description"),
                     category=optional_string(payload, "category"), type=segment_type,
                     identity_hashing=parse_identity_hashing(payload))
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                         code="invalid_idempotency_key")
    principal = request[state.PRINCIPAL]
    with changing_segments(request):
        async with request.app[state.POOL].acquire() as conn:
            result = await create_segment(conn, principal.endpoint_id, new, idempotency_key)
    return success(result)


@routes.get("/v1/segments")
async def get_segments(request: web.Request) -> web.Response:
    segments = await request.app[state.SEGMENT_LISTS].get(request[state.PRINCIPAL].endpoint_id)
    return success({"totalCount": len(segments), "list": segments})


@routes.get("/v1/segments/{segment_id}")
async def get_one_segment(request: web.Request) -> web.Response:
    segment_id = parse_segment_id(request.match_info["segment_id"])
    row = await get_segment(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id, segment_id)
    return success({
        "id": row["id"],
        "name": row["name"],
        "segmentAttributes": [{"name": name} for name in row["attributes"]],
        "description": row["description"],
        "category": row["category"],
        "type": row["type"],
        "status": row["status"],
        "identityAttribute": row["identity_attribute"],
        "identityHashing": row["identity_hashing"],
        "size": row["member_count"],
        "lastUploadAt": row["last_upload_at"].isoformat() if row["last_upload_at"] else None,
        "createdAt": row["created_at"].isoformat(),
        "updatedAt": row["updated_at"].isoformat(),
    })
