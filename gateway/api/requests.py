"""Small helpers shared by handlers for reading requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from gateway import state
from gateway.ingest.upload import idle_chunks
from gateway.errors import BadRequest


async def read_small_body(request: web.Request) -> bytes:
    """The whole body of a small route, bounded like ``request.read()`` by the app's client_max_size (413),
    and 408 when no byte of it arrives for GATEWAY_CLIENT_IDLE_TIMEOUT (gateway.http.clients)."""
    limit = request.client_max_size
    body = bytearray()
    async for chunk in idle_chunks(request.content, request.app[state.SETTINGS].client_idle_timeout):
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body of a small JSON route (see ``read_small_body``), which must be an object."""
    body = await read_small_body(request)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be a JSON object", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return payload


def optional_string(payload: dict[str, Any], field: str, default: str = "") -> str:
    value = payload.get(field, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string", code="invalid_field")
    return storable_text(value, field)


def storable_text(value: str, field: str) -> str:
    """``value``, or 400 if PostgreSQL text cannot hold it (a NUL character)."""
    if "\x00" in value:
        raise BadRequest(f"{field} must not contain a NUL character", code="invalid_field")
    return value


def check_fields(payload: dict[str, Any], allowed: Sequence[str]) -> None:
    """400 ``unknown_field`` for a field the route does not take (a typo would otherwise be silently ignored)."""
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; this route takes {', '.join(allowed)}",
                         code="unknown_field")


def required_name(value: Any) -> str:
    """A resource's ``name``: a non-empty string that PostgreSQL can store."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("name is required: a non-empty string", code="invalid_name")
    return storable_text(value, "name")
