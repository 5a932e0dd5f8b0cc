"""Small helpers shared by handlers for reading requests."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.errors import BadRequest


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body of a small JSON route (bounded by the app's client_max_size), which must be an object."""
    body = await request.read()
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
