"""The Exchange envelope: ``{"responseStatus": "success", "result": …}`` or a failure with an error object."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"


def success(result: Any, *, status: int = 200) -> web.Response:
    body = orjson.dumps({"responseStatus": "success", "result": result})
    return web.Response(body=body, status=status, content_type=JSON)


def failure(status: int, code: str, message: str, *, extra: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, details: dict[str, Any] | None = None) -> web.Response:
    payload: dict[str, Any] = {"responseStatus": "failure",
                               "error": {"code": code, "message": message, **(details or {})}}
    if extra:
        payload.update(extra)
    return web.Response(body=orjson.dumps(payload), status=status, content_type=JSON, headers=headers)
