"""The two middlewares: failures as the JSON envelope (outermost), then API-key authentication."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway import state
from gateway.database import CONNECTION_ERRORS, translate_errors
from gateway.errors import GatewayError, TooManyRequests, Unauthorized
from gateway.responses import failure

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_PREFIX = "/v1/admin"  # management routes: admin scope whatever the method
REALM = 'Bearer realm="audience-gateway"'


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every failure leaves as the Exchange failure envelope; never an HTML page or a traceback."""
    try:
        return await handler(request)
    except GatewayError as exc:
        headers = dict(exc.headers)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = REALM + (', error="invalid_token"' if exc.code == "invalid_token" else "")
        return failure(exc.status, exc.code, exc.message, extra=exc.extra, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
        return failure(exc.status, code, exc.reason, headers=headers)
    except CONNECTION_ERRORS:
        log.warning("database unavailable during %s %s", request.method, request.path, exc_info=True)
        return failure(503, "database_unavailable", "the database is unavailable; try again shortly")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return failure(500, "internal_error", "internal error; the gateway's log has the details")


def required_scope(method: str, path: str) -> str:
    """read for GET/HEAD/OPTIONS, write for anything that changes data, admin for management routes."""
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return "admin"
    return "read" if method in READ_METHODS else "write"


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every ``/v1`` call needs a valid key with the scope of the call (401 / 403).

    A client address with too many recent failures gets 429 before its key is even looked up
    (gateway.throttle), unless the key authenticated recently in this process; keys come from the
    process's short cache (gateway.keycache).
    """
    if request.path.startswith("/v1/") or request.path == "/v1":
        throttle = request.app[state.AUTH_THROTTLE]
        address = request.remote or "unknown"
        keys = request.app[state.KEYS]
        wait = throttle.retry_after(address)
        if wait is not None and not keys.recently_valid(request.headers.get("Authorization")):
            raise TooManyRequests(f"too many failed authentications from this address; retry in {wait} s",
                                  retry_after=wait)
        try:
            async with translate_errors():
                principal = await keys.authenticate(request.headers.get("Authorization"))
        except Unauthorized:
            throttle.record_failure(address)
            raise
        principal.require(required_scope(request.method, request.path))
        request[state.PRINCIPAL] = principal
    return await handler(request)
