"""The middlewares, outermost first: request id, access line and request metrics; failures as the JSON
envelope; API-key authentication."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from gateway.ids import parse_int
from gateway import state
from gateway.ops import metrics
from gateway.ops.logs import ACCESS_LOGGER, REQUEST_ID, REQUEST_ID_HEADER, RequestStats, request_id_from
from gateway.db.pool import CONNECTION_ERRORS, translate_errors
from gateway.errors import GatewayError, TooManyRequests, Unauthorized
from gateway.http.responses import failure

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_PREFIX = "/v1/admin"  # management routes: admin scope whatever the method
API_PREFIX = "/api/"  # the management API (gateway.api.manage)
PRIVACY_PREFIX = "/api/privacy"  # admin scope whatever the method
# POSTs of /api that only read (check an expression or a cron, read definitions by id): write scope, as reading
API_READING_POSTS = frozenset({"/api/segment/definitions/validate", "/api/segment/definitions/bulk-get",
                               "/api/config/schedules/validate"})
REALM = 'Bearer realm="audience-gateway"'
METRICS_PATH = "/metrics"
KNOWN_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH"})
QUIET_ROUTES = frozenset({METRICS_PATH, "/healthz", "/readyz"})  # scraped and probed often: DEBUG lines
DRAINING_RETRY_AFTER = 1  # seconds: a new connection reaches another process, or this one restarted
CLIENT_GONE = 499  # the client closed the connection before the answer (nginx's convention)


@web.middleware
async def request_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Give the request its id (the client's ``X-Request-ID``, sanitised, or a new one), then write its
    access line and request metrics once it is answered."""
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    token = REQUEST_ID.set(request_id)
    request[state.REQUEST_ID] = request_id
    request[state.STATS] = RequestStats()
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        in_flight = request.app[state.IN_FLIGHT]
        if in_flight.draining:
            response = refusal_while_draining()
        else:
            with in_flight.track():
                response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # statuses below 400 (error_middleware renders the others)
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        if request[state.STATS].cut_short == "client_gone":
            status = CLIENT_GONE
        _observe(request, response, status, time.perf_counter() - started)
        REQUEST_ID.reset(token)


def refusal_while_draining() -> web.Response:
    """The answer to a request that arrives (on a kept-alive connection) after the drain began."""
    return failure(503, "shutting_down", "this gateway process is shutting down; retry on a new connection",
                   headers={"Retry-After": str(DRAINING_RETRY_AFTER)})


async def close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: once the drain began, every answer closes its connection (no next request
    on it). The header is set here too: aiohttp writes it from ``keep_alive`` before this hook runs."""
    if request.app[state.IN_FLIGHT].draining:
        response.force_close()
        response.headers["Connection"] = "close"


async def on_answer_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer carries the request's id, streamed ones included; the request
    remembers that its answer has started (a failure after this point cannot be a new answer)."""
    request_id = request.get(state.REQUEST_ID)
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    request[state.ANSWER] = response


def route_of(request: web.Request) -> str:
    """The matched route's pattern (``/v1/segments/{segment_id}/data``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _observe(request: web.Request, response: web.StreamResponse | None, status: int, seconds: float) -> None:
    route = route_of(request)
    method = request.method if request.method in KNOWN_METHODS else "OTHER"
    sent = 0
    if response is not None:
        sent = response.body_length if response.prepared else (response.content_length or 0)
    metrics.REQUEST_DURATION.labels(method, route, str(status)).observe(seconds)
    metrics.SENT_BYTES.labels(route).inc(sent)
    stats = request[state.STATS]
    principal = request.get(state.PRINCIPAL)
    segment = request.match_info.get("segment_id", "")
    fields = {"method": method, "route": route, "status": status, "duration_s": round(seconds, 6),
              "rows": stats.rows, "bytes_in": stats.bytes_received, "bytes_out": sent,
              "segment": parse_int(segment, 0),
              "endpoint": principal.endpoint_name if principal else None}
    if stats.cut_short:
        fields["cut_short"] = stats.cut_short
    level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
    access_log.log(level, "%s %s %d", method, route, status, extra={"fields": fields})


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every failure leaves as the Exchange failure envelope; never an HTML page or a traceback.

    Two failures get no envelope: one after the answer has started (its status line is sent: the
    connection is aborted so that the client sees an incomplete transfer, never a second answer inside
    the body), and one caused by the client going away (nobody is left to answer; logged as such).
    """
    try:
        return await handler(request)
    except Exception as exc:
        answer = request.get(state.ANSWER)
        if answer is not None:
            return _cut_short(request, answer, exc)
        if _client_gone(request):
            request[state.STATS].cut_short = "client_gone"
            log.info("client closed the connection during %s %s (%s)", request.method, request.path,
                     type(exc).__name__)
            return web.Response(status=400)  # for the access line only: there is no one to send it to
        return _failure(request, exc)


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _cut_short(request: web.Request, answer: web.StreamResponse, exc: Exception) -> web.StreamResponse:
    """End an answer that failed after its status line: aiohttp then only tries to finish it."""
    stats = request[state.STATS]
    if _client_gone(request):
        stats.cut_short = "client_gone"
        log.info("client closed the connection after %d bytes of the answer to %s %s", answer.body_length,
                 request.method, request.path)
        return answer
    stats.cut_short = "database_unavailable" if isinstance(exc, CONNECTION_ERRORS) else "internal_error"
    log.error("answer to %s %s cut short after %d bytes (%s): connection aborted", request.method, request.path,
              answer.body_length, stats.cut_short, exc_info=exc)
    assert request.transport is not None
    request.transport.abort()
    return answer


def _failure(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The failure envelope for an error raised before the answer started."""
    if isinstance(exc, GatewayError):
        headers = dict(exc.headers)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = REALM + (', error="invalid_token"' if exc.code == "invalid_token" else "")
        response = failure(exc.status, exc.code, exc.message, extra=exc.extra, headers=headers,
                           details=exc.details)
        if exc.closes_connection:
            response.force_close()
        return response
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
        return failure(exc.status, code, exc.reason, headers=headers)
    if isinstance(exc, CONNECTION_ERRORS):
        log.warning("database unavailable during %s %s", request.method, request.path, exc_info=exc)
        return failure(503, "database_unavailable", "the database is unavailable; try again shortly")
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return failure(500, "internal_error", "internal error; the gateway's log has the details")


WHOAMI_PATH = "/api/whoami"


def required_scope(method: str, path: str) -> str:
    """read for GET/HEAD/OPTIONS, write for anything that changes data, admin for management routes.

    ``/api`` (gateway.api.manage): reading needs write and changing needs admin, except the destination
    mappings, which any key of that endpoint may read (Audience Manager's read-only users), and the POSTs
    that only read (API_READING_POSTS).
    """
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return "admin"
    if path == PRIVACY_PREFIX or path.startswith(PRIVACY_PREFIX + "/"):
        return "admin"  # erasures, their audit and the suppression list (gateway.api.privacy)
    if path == WHOAMI_PATH:
        return "read"  # any key may learn its own endpoint and scope (the console offers what it allows)
    if path.startswith(API_PREFIX):
        if method not in READ_METHODS and not (method == "POST" and path in API_READING_POSTS):
            return "admin"
        return "read" if path.startswith(API_PREFIX + "destinations/") else "write"
    return "read" if method in READ_METHODS else "write"


def _needs_key(request: web.Request) -> bool:
    if request.path == METRICS_PATH:
        return request.app[state.SETTINGS].metrics_require_key
    return request.path.startswith(("/v1/", API_PREFIX)) or request.path in ("/v1", "/api")


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every ``/v1`` and ``/api`` call (and ``/metrics`` if GATEWAY_METRICS_REQUIRE_KEY is set) needs a valid key with the scope of the call (401 / 403).

    A client address with too many recent failures gets 429 before its key is even looked up
    (gateway.auth.throttle), unless the key authenticated recently in this process; keys come from the
    process's short cache (gateway.auth.cache).
    """
    if _needs_key(request):
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
