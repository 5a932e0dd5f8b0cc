"""``/api``: segment management (list with filters and a change feed, describe, change, delete) and
Audience Manager's destination mappings view.

Scopes (gateway.http.middleware.required_scope): reading ``/api/segments…`` needs write, changing needs admin;
``/api/destinations/{endpoint}/mappings`` needs any key of that endpoint. Each key sees only its own
endpoint's segments: another endpoint's segment — or destination — is answered exactly like a missing one
(404, not 403: a 403 would tell a caller which endpoints exist).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from gateway import state
from gateway.api.requests import read_json_object, storable_text
from gateway.api.segments import changing_segments, parse_identity_hashing
from gateway.audience.changefeed import Page, PageRequest, iso, parse_time, position
from gateway.errors import BadRequest, NotFound, invalid_code
from gateway.audience.metadata import (EDITABLE, STATUSES, SegmentFilters, change_segment, describe, get_any_segment,
                              mapping, mapping_page, purge_segment, segment_page)
from gateway.http.paging import PAGE_PARAMETERS, encode_cursor, parse_page
from gateway.http.responses import success
from gateway.audience.segments import SEGMENT_TYPES, parse_segment_id
from gateway.privacy.hashing import set_identity_hashing

routes = web.RouteTableDef()


def check_parameters(query: MultiMapping[str], allowed: Iterable[str]) -> None:
    """400 for a parameter the route does not know (a typo would otherwise silently list everything)."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; this route takes "
                         f"{', '.join(allowed)}", code="unknown_parameter")


def choice(query: MultiMapping[str], name: str, choices: Iterable[str]) -> str | None:
    value = query.get(name)
    if value is not None and value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}", code=invalid_code(name))
    return value


def feed_page(query: MultiMapping[str]) -> PageRequest:
    """``limit`` and ``cursor`` of a change-feed list (gateway.http.paging)."""
    page = parse_page(query, position)
    return PageRequest(page.limit) if page.position is None else PageRequest(page.limit, *page.position)


def feed_envelope(name: str, items: list[dict[str, Any]], page: Page) -> dict[str, Any]:
    """The result object of a change-feed list: its items under ``name``, then the paging fields."""
    return {name: items, "nextCursor": encode_cursor(page.next), "nextUpdatedSince": iso(page.watermark)}


def updated_since(query: MultiMapping[str]) -> Any:
    text = query.get("updatedSince")
    return None if text is None else parse_time(text, "updatedSince")


@routes.get("/api/segments")
async def list_segments(request: web.Request) -> web.Response:
    """This endpoint's segments, every status, in id order, ``limit`` at a time (gateway.http.paging).

    Filters: ``status``, ``type``, ``q`` (in the name or description, any case), ``updatedSince`` (ISO 8601
    with a zone: metadata or membership changed after it). Result: ``{"segments": [...], "nextCursor":
    <pass as cursor for the next page, null at the end>, "nextUpdatedSince": <the next poll's updatedSince>}``.
    """
    query = request.query
    check_parameters(query, ("status", "type", "q", "updatedSince", *PAGE_PARAMETERS))
    filters = SegmentFilters(status=choice(query, "status", STATUSES), type=choice(query, "type", SEGMENT_TYPES),
                             text=storable_text(query.get("q", ""), "q") or None, updated_since=updated_since(query))
    page = feed_page(query)
    async with request.app[state.POOL].acquire() as conn:
        result = await segment_page(conn, request[state.PRINCIPAL].endpoint_id, filters, page)
    return success(feed_envelope("segments", [describe(row) for row in result.rows], result))


@routes.get("/api/segments/{segment_id}")
async def get_segment(request: web.Request) -> web.Response:
    """One segment, whatever its status: metadata, identity attribute, attributes, exact member count,
    created / updated / last upload times (and deleted / purged times)."""
    check_parameters(request.query, ())
    segment_id = parse_segment_id(request.match_info["segment_id"])
    row = await get_any_segment(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id, segment_id)
    return success(describe(row))


def parse_changes(payload: dict[str, Any]) -> dict[str, str]:
    """PATCH body: only ``name`` (non-empty), ``description``, ``category`` (strings), ``status``
    (``identityHashing`` is taken out before: ``patch_segment``)."""
    unknown = sorted(set(payload) - set(EDITABLE))
    if unknown:
        raise BadRequest(f"these fields cannot be changed: {', '.join(unknown)} (only {', '.join(EDITABLE)})",
                         code="unknown_field")
    for field, value in payload.items():
        if not isinstance(value, str):
            raise BadRequest(f"{field} must be a string", code="invalid_field")
        storable_text(value, field)
    if "name" in payload and not payload["name"].strip():
        raise BadRequest("name must not be empty", code="invalid_name")
    if "status" in payload and payload["status"] not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", code="invalid_status")
    return payload


@routes.patch("/api/segments/{segment_id}")
async def patch_segment(request: web.Request) -> web.Response:
    """Change ``name``, ``description``, ``category`` and/or ``status`` (JSON object); answers the segment.

    ``status: "deleted"`` is a soft delete (as DELETE); active or inactive un-deletes a deleted segment
    until its members are purged (then 409 ``segment_purged``). ``identityHashing`` (``"sha256"``, or
    ``null``) changes only while the segment holds no members nor staged REPLACE batches (else 409
    ``segment_not_empty``).
    """
    check_parameters(request.query, ())
    segment_id = parse_segment_id(request.match_info["segment_id"])
    payload = await read_json_object(request)
    hashing = "identityHashing" in payload
    identity_hashing = parse_identity_hashing(payload) if hashing else None
    payload.pop("identityHashing", None)
    changes = parse_changes(payload)
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    with changing_segments(request):
        async with request.app[state.POOL].acquire() as conn:
            if hashing:  # first: a 409 (the segment holds data) leaves the rest unchanged too
                await set_identity_hashing(conn, endpoint_id, segment_id, identity_hashing)
            _, after = await change_segment(conn, segment_id, endpoint_id, changes)
    return success(describe(after))


@routes.delete("/api/segments/{segment_id}")
async def delete_segment(request: web.Request) -> web.Response:
    """Soft delete: status ``deleted`` (404 on every ``/v1`` route from now on), members purged after
    GATEWAY_DELETE_GRACE; ``?purge=true`` purges them at once. Deleting again changes nothing."""
    check_parameters(request.query, ("purge",))
    purge = choice(request.query, "purge", ("true", "false")) == "true"
    segment_id = parse_segment_id(request.match_info["segment_id"])
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    with changing_segments(request):
        async with request.app[state.POOL].acquire() as conn:
            await change_segment(conn, segment_id, endpoint_id, {"status": "deleted"})
            if purge:
                await purge_segment(conn, segment_id, 0)
            return success(describe(await get_any_segment(conn, endpoint_id, segment_id)))


@routes.get("/api/destinations/{endpoint}/mappings")
async def get_mappings(request: web.Request) -> web.Response:
    """Audience Manager's view of each segment of the endpoint (named, or given by its integer id):
    ``destinationMappingId``, ``elementName``, ``elementDescription``, ``elementStatus``, ``updatedAt``
    (when one of these last changed). ``updatedSince``, ``limit`` and ``cursor`` as on /api/segments;
    result ``{"mappings": [...], "nextCursor": …, "nextUpdatedSince": …}``. Any key of the endpoint."""
    check_parameters(request.query, ("updatedSince", *PAGE_PARAMETERS))
    principal = request[state.PRINCIPAL]
    named = request.match_info["endpoint"]
    if named not in (principal.endpoint_name, str(principal.endpoint_id)):
        raise NotFound(f"destination {named!r} does not exist", code="destination_not_found")
    since = updated_since(request.query)
    page = feed_page(request.query)
    async with request.app[state.POOL].acquire() as conn:
        result = await mapping_page(conn, principal.endpoint_id, since, page)
    return success(feed_envelope("mappings", [mapping(row) for row in result.rows], result))
