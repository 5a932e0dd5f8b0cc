"""``GET /api/audiences``: every audience of the endpoint (pushed lists and Queries audiences) as the
segmentation guide shows them (gateway.segmentation.audiences). Reading needs a write key, as all of ``/api``.

Parameters: ``name`` / ``description`` (contained, any case), ``sort`` (``name``, ``creationTime``,
``updateTime`` or ``totalProfiles``, optionally ``:asc`` / ``:desc``; default ``updateTime:desc``),
``start`` (0-based offset) and ``limit`` (1..1000, default 100). Answer: ``{"children": [...], "_page":
{"totalCount", "totalPages", "limit", "start", "next"}, "_links": {"next": {"href"}}}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiMapping

from gateway import state
from gateway.api.manage import check_parameters
from gateway.errors import BadRequest
from gateway.http.paging import DEFAULT_LIMIT, MAX_LIMIT
from gateway.http.responses import success
from gateway.ids import MAX_ID, parse_int
from gateway.segmentation.audiences import SORT_KEYS, AudienceQuery, audience_page

routes = web.RouteTableDef()
PARAMETERS = ("name", "description", "sort", "start", "limit")


def contains(query: MultiMapping[str], name: str) -> str | None:
    value = query.get(name)
    if value is not None and "\x00" in value:
        raise BadRequest(f"{name} must not hold a NUL character", code=f"invalid_{name}")
    return value or None


def parse_sort(text: str | None) -> tuple[str, bool]:
    """``key``, ``key:asc`` or ``key:desc`` (key one of SORT_KEYS) as (key, descending)."""
    if text is None:
        return "updateTime", True
    key, _, direction = text.partition(":")
    if key not in SORT_KEYS or direction not in ("", "asc", "desc"):
        raise BadRequest(f"sort must be one of {', '.join(SORT_KEYS)}, optionally followed by :asc or :desc",
                         code="invalid_sort")
    return key, direction == "desc"


def audience_query(query: MultiMapping[str]) -> AudienceQuery:
    check_parameters(query, PARAMETERS)
    start = parse_int(query.get("start", "0"), 0, MAX_ID)
    if start is None:
        raise BadRequest("start must be an integer from 0", code="invalid_start")
    limit = parse_int(query.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT)
    if limit is None:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", code="invalid_limit")
    sort, descending = parse_sort(query.get("sort"))
    return AudienceQuery(name=contains(query, "name"), description=contains(query, "description"), sort=sort,
                         descending=descending, start=start, limit=limit)


@routes.get("/api/audiences")
async def list_audiences(request: web.Request) -> web.Response:
    wanted = audience_query(request.query)
    page = await audience_page(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id, wanted)
    following = wanted.start + wanted.limit
    more = following < page.total
    links: dict[str, Any] = {}
    if more:
        parameters = {**request.query, "start": str(following), "limit": str(wanted.limit)}
        links["next"] = {"href": f"{request.path}?{urlencode(parameters)}"}
    return success({"children": page.audiences,
                    "_page": {"totalCount": page.total, "totalPages": -(-page.total // wanted.limit),
                              "limit": wanted.limit, "start": wanted.start,
                              "next": str(following) if more else None},
                    "_links": links})
