"""The one paging rule of the ``/api`` lists: ``limit`` (1..1000, default 100) and an opaque ``cursor``.

A cursor is the previous answer's ``nextCursor`` (``null`` on the last page): base64url of a small JSON
object saying where that page ended. What the object holds is the list's business (a ``read`` function
turns it back into a position, raising ValueError/TypeError/KeyError when it is not one); this module only
makes it opaque, so a client passes it back as it is and the lists can change what they keep in it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import orjson

from gateway.errors import BadRequest
from gateway.ids import MAX_ID, parse_int

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PAGE_PARAMETERS = ("limit", "cursor")

P = TypeVar("P")


@dataclasses.dataclass(frozen=True)
class PageQuery(Generic[P]):
    limit: int
    position: P | None  # where the previous page ended; None for the first page


def parse_page(query: Mapping[str, str], read: Callable[[dict[str, Any]], P],
               legacy: Callable[[str], P | None] | None = None) -> PageQuery[P]:
    """``limit`` and ``cursor`` of a request; 400 ``invalid_limit`` / ``invalid_cursor``. ``legacy`` reads a
    cursor of an older form (None when it is not one) before it is taken for an opaque one."""
    text = query.get("limit")
    limit = DEFAULT_LIMIT if text is None else parse_int(text, 1, MAX_LIMIT)
    if limit is None:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", code="invalid_limit")
    cursor = query.get("cursor")
    if cursor is None:
        return PageQuery(limit, None)
    position = legacy(cursor) if legacy is not None else None
    if position is None:
        try:
            position = read(decode_cursor(cursor))
        except (ValueError, TypeError, KeyError):
            raise _invalid() from None
    return PageQuery(limit, position)


def encode_cursor(fields: dict[str, Any] | None) -> str | None:
    """The ``nextCursor`` of a page that ended at ``fields`` (None: the last page)."""
    if fields is None:
        return None
    return base64.urlsafe_b64encode(orjson.dumps(fields)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The fields of a cursor this gateway gave out; 400 ``invalid_cursor`` for anything else."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(value, dict):
            raise ValueError
        return value
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise _invalid() from None


def _invalid() -> BadRequest:
    return BadRequest("cursor is not one this gateway gave out (use nextCursor as it is)", code="invalid_cursor")


# Lists shaped like the hosted Segmentation Service's (``start``/``limit``): a cursor holds the next offset.
OFFSET_PARAMETERS = ("start", *PAGE_PARAMETERS)


def parse_offset_page(query: Mapping[str, str]) -> PageQuery[int]:
    """``start`` (0-based) or ``cursor``, and ``limit``: the page's position is its offset. 400
    ``invalid_start`` for a bad start or both given."""
    page = parse_page(query, _read_offset)
    if page.position is not None:
        if "start" in query:
            raise BadRequest("give start or cursor, not both", code="invalid_start")
        return page
    text = query.get("start")
    start = 0 if text is None else parse_int(text, 0)
    if start is None:
        raise BadRequest("start must be an integer from 0", code="invalid_start")
    return PageQuery(page.limit, start)


def next_offset_cursor(page: PageQuery[int], total: int) -> str | None:
    """The cursor of the page after ``page`` (None when it was the last)."""
    following = (page.position or 0) + page.limit
    return encode_cursor({"start": following}) if following < total else None


def _read_offset(fields: dict[str, Any]) -> int:
    start = fields["start"]
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= MAX_ID:
        raise ValueError("start is not an offset")
    return start
