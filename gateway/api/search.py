"""``/api/search``: audiences and definitions by name (gateway.segmentation.search), and the audiences one
identity is in (gateway.segmentation.audiences.memberships). Reading needs a write key, as all of ``/api``;
another endpoint's audiences are never looked at.
"""

from __future__ import annotations

from aiohttp import web

from gateway import state
from gateway.api.manage import check_parameters
from gateway.errors import BadRequest
from gateway.http.responses import success
from gateway.ids import parse_int
from gateway.segmentation.audiences import memberships
from gateway.segmentation.search import TooManyTerms, describe, parse, search_entities

routes = web.RouteTableDef()
MAX_SEARCH_LIMIT = 50
DEFAULT_SEARCH_LIMIT = 20
MAX_TEXT = 500  # characters of a search string or an identity (percent-encoded, within aiohttp's 8190-byte request line)


def text_parameter(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None or not value.strip():
        raise BadRequest(f"{name} is required", code=f"missing_{name}")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise BadRequest(f"{name} must be at most {MAX_TEXT} characters, without a NUL character",
                         code=f"invalid_{name}")
    return value


@routes.get("/api/search/entities")
async def search(request: web.Request) -> web.Response:
    """``s`` (words, ``prefix*``, ``"a phrase"``, ``name:``/``description:``/``id:`` terms, ``a OR b``),
    ``limit`` (1..50, default 20), ``page`` (from 0). Answer: ``{"entities": [{id, type (audience |
    definition), name, description, score}], "page": {totalCount, totalPages, pageOffset, pageSize}}``."""
    query = request.query
    check_parameters(query, ("s", "limit", "page"))
    text = text_parameter(request, "s")
    limit = parse_int(query.get("limit", str(DEFAULT_SEARCH_LIMIT)), 1, MAX_SEARCH_LIMIT)
    if limit is None:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_SEARCH_LIMIT}", code="invalid_limit")
    page = parse_int(query.get("page", "0"), 0, 1_000_000)
    if page is None:
        raise BadRequest("page must be an integer from 0", code="invalid_page")
    try:
        parsed = parse(text)
    except TooManyTerms as error:
        raise BadRequest(str(error), code="invalid_s") from None
    found = await search_entities(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id, parsed,
                                  limit=limit, offset=page * limit)
    return success({"entities": [describe(row) for row in found.rows],
                    "page": {"totalCount": found.total, "totalPages": -(-found.total // limit),
                             "pageOffset": page, "pageSize": len(found.rows)}})


@routes.get("/api/search/members")
async def members(request: web.Request) -> web.Response:
    """``identity``: every audience of the endpoint that holds it (normalised as a push normalises it;
    hashed for a segment that hashes identities), with its attribute values there. Answer:
    ``{"identity", "audiences": [audience fields and "attributes": {name: value}], "totalCount"}``."""
    check_parameters(request.query, ("identity",))
    identity = text_parameter(request, "identity")
    async with request.app[state.CONTROL_POOL].acquire() as conn:
        audiences = await memberships(conn, request[state.PRINCIPAL].endpoint_id, identity)
    return success({"identity": identity, "audiences": audiences, "totalCount": len(audiences)})
