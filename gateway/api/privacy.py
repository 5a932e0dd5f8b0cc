"""``/api/privacy``: erase identities from everything the endpoint holds, its suppression list, and the
audit of its erasures. Admin scope for every route (gateway.http.middleware.required_scope). Each key acts
on its own endpoint only: an erasure never reads another endpoint's segments, and another endpoint's
erasure is answered like a missing one.
"""

from __future__ import annotations

from aiohttp import web

from gateway import state
from gateway.api.data import check_body_headers
from gateway.api.manage import check_parameters
from gateway.api.requests import check_fields, read_json_object
from gateway.errors import BadRequest
from gateway.http.paging import PAGE_PARAMETERS, encode_cursor, parse_page
from gateway.http.responses import success
from gateway.ids import MAX_ID
from gateway.jobs.erasure import create_erasure, get_erasure, parse_erasure_id
from gateway.privacy import erase, suppressions
from gateway.privacy.identities import CsvIdentities, ListedIdentities, identity_hashes, identity_list

routes = web.RouteTableDef()

JSON_TYPES = frozenset({"application/json"})
_SUPPRESS = {"true": True, "false": False}


def _suppress_flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise BadRequest("suppress must be true or false", code="invalid_suppress")
    return value


@routes.post("/api/privacy/erase")
async def post_erase(request: web.Request) -> web.Response:
    """Erase identities: a JSON body ``{"identities": [...], "suppress": false}`` (at most 10,000), or a CSV
    body (any size, streamed, gzip allowed) whose identity column is ``?ids=NAME``, else the first whose
    name holds "email", else the first; ``?suppress=true`` then. Answers the job ``{id, status}`` with the
    counts of what was sent; ``GET /api/privacy/erase/{id}`` tells what it erased where."""
    content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    settings = request.app[state.SETTINGS]
    source: ListedIdentities | CsvIdentities
    if content_type in JSON_TYPES:
        check_parameters(request.query, ())
        payload = await read_json_object(request)
        check_fields(payload, ("identities", "suppress"))
        suppress = _suppress_flag(payload.get("suppress", False))
        source = ListedIdentities(identity_list(payload))
    else:
        check_parameters(request.query, ("ids", "suppress"))
        if request.query.get("suppress", "false") not in _SUPPRESS:
            raise BadRequest("suppress must be true or false", code="invalid_suppress")
        suppress = _SUPPRESS[request.query.get("suppress", "false")]
        gzipped = check_body_headers(request, settings.max_body_bytes)
        source = CsvIdentities(request.content, gzipped=gzipped, ids=request.query.get("ids") or None,
                               max_body_bytes=settings.max_body_bytes, max_field_bytes=settings.max_field_bytes,
                               max_attributes=settings.max_attributes, idle_timeout=settings.client_idle_timeout)
    principal = request[state.PRINCIPAL]
    async with request.app[state.DATA_SLOTS].connection(request.app[state.POOL]) as conn:
        job_id, received = await create_erasure(conn, principal.endpoint_id, principal.key_id,
                                                request[state.REQUEST_ID], source, suppress)
    request[state.STATS].rows = received.received
    return success({"id": job_id, "status": "NEW", "suppress": suppress, "numReceived": received.received,
                    "numInvalid": received.invalid, "invalidSamples": received.invalid_samples})


@routes.get("/api/privacy/erase/{job_id}")
async def get_erase(request: web.Request) -> web.Response:
    """One erasure: status (NEW, PROCESSING, SUCCEEDED, FAILED), ``found`` (members erased per segment id),
    ``totalErased``, ``erasedFrom`` (members, staged REPLACE rows, export snapshot rows per segment),
    ``rejectsErased`` and timings."""
    check_parameters(request.query, ())
    job_id = parse_erasure_id(request.match_info["job_id"])
    row = await get_erasure(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id, job_id)
    return success(erase.describe(row))


def _before(fields: dict[str, object]) -> int:
    before = fields["before"]
    if type(before) is not int or not 1 <= before <= MAX_ID:
        raise ValueError("before is not an id")
    return before


@routes.get("/api/privacy/requests")
async def get_requests(request: web.Request) -> web.Response:
    """The audit: the endpoint's erasures, newest first, ``limit`` at a time (gateway.http.paging); with
    ``?identity=`` (plaintext or its SHA-256), only those that held it (matched by hash)."""
    check_parameters(request.query, ("identity", *PAGE_PARAMETERS))
    page = parse_page(request.query, _before)
    identity = request.query.get("identity")
    hashes = None if identity is None else identity_hashes(identity)
    if hashes == []:
        raise BadRequest("identity must not be empty", code="invalid_identity")
    rows = await erase.list_requests(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id,
                                     page.position or MAX_ID, page.limit + 1, hashes)
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    return success({"requests": [erase.describe(row) for row in rows],
                    "nextCursor": encode_cursor({"before": rows[-1]["job_id"]} if more else None)})


def _after(fields: dict[str, object]) -> str:
    after = fields["after"]
    if not isinstance(after, str):
        raise ValueError("after is not a hash")
    return after


@routes.get("/api/privacy/suppressions")
async def get_suppressions(request: web.Request) -> web.Response:
    """The endpoint's suppression list (hashes only), ``limit`` at a time."""
    check_parameters(request.query, PAGE_PARAMETERS)
    page = parse_page(request.query, _after)
    rows = await suppressions.page(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id,
                                   page.position or "", page.limit + 1)
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    return success({"suppressions": [suppressions.describe(row) for row in rows],
                    "nextCursor": encode_cursor({"after": rows[-1]["identity_sha256"]} if more else None)})


@routes.delete("/api/privacy/suppressions")
async def delete_suppressions(request: web.Request) -> web.Response:
    """Take identities off the list: ``{"identities": [...]}`` (plaintext, or the hashes the list shows)."""
    check_parameters(request.query, ())
    payload = await read_json_object(request)
    check_fields(payload, ("identities",))
    removed = await suppressions.remove(request.app[state.POOL], request[state.PRINCIPAL].endpoint_id,
                                        identity_list(payload))
    return success({"removed": removed})
