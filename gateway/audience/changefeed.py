"""Keyset pages and the ``updatedSince`` change feed of the ``/api`` lists. No HTTP here.

Pages are in id order; the cursor (made opaque by gateway.http.paging) holds the last id and the feed's
watermark, so segments created while a client pages through only ever appear after the ids it has seen:
nothing is skipped or repeated.

The guarantee of ``updatedSince``: each answer carries ``nextUpdatedSince``, a watermark W such that every
change made before W is in the answer (when it matches the filters). A client that polls with
``updatedSince`` = the previous answer's ``nextUpdatedSince`` sees every change at least once, including
those of transactions that were still running during its previous poll. A client's own clock would not
do: a change's time is taken before its transaction commits, so a change dated before a poll may become
visible only after it. W is the earlier of the database clock and the start of the oldest transaction of
the gateway's database role that may write a change of the listed endpoint (from ``pg_stat_activity`` and
``pg_locks``); change times are ``clock_timestamp()`` at the write (see migration 0004), never earlier than
that start. Which transactions may: one that declared it writes that endpoint's changes only
(``declare_writes``: pushes, REPLACE commits, export snapshots), and any other holding a transaction id (it
may write anything). So a long upload or export snapshot holds back its own endpoint's W meanwhile (some
changes are listed again by the next poll: at least once, never missed), and no other endpoint's. All
pages of one listing share the first page's W (it travels in the cursor).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg

from gateway.ids import MAX_ID
from gateway.errors import BadRequest
from gateway.db.queries import QUERIES

_UNENCODED_PLUS = re.compile(r" (\d\d:?\d\d)$")


@dataclasses.dataclass(frozen=True)
class PageRequest:
    limit: int
    after: int = 0  # the last id of the previous page
    watermark: dt.datetime | None = None  # the first page's, once a cursor carries it


@dataclasses.dataclass(frozen=True)
class Page:
    rows: Sequence[asyncpg.Record]
    next: dict[str, Any] | None  # the fields of the next page's cursor (gateway.http.paging); None at the end
    watermark: dt.datetime


def iso(at: dt.datetime | None) -> str | None:
    """Always with microseconds, so that times of one zone also compare as strings."""
    return at.isoformat(timespec="microseconds") if at is not None else None


def parse_time(text: str, name: str) -> dt.datetime:
    """An ISO 8601 date-time with its offset (``Z`` or ``±hh:mm``), years 1 to 9999 in UTC; 400 otherwise."""
    text = _UNENCODED_PLUS.sub(r"+\1", text)  # "+00:00" sent without URL-encoding arrives as " 00:00"
    try:
        at = _utc(dt.datetime.fromisoformat(text))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date-time with a time zone, years 1 to 9999, "
                         "e.g. 2026-01-31T12:00:00Z", code="invalid_time") from None
    return at


def _utc(at: dt.datetime) -> dt.datetime:
    """``at`` in UTC; ValueError without a zone, or when its offset takes it out of years 1 to 9999 (the
    driver could not send it)."""
    if at.tzinfo is None:
        raise ValueError("no time zone")
    try:
        return at.astimezone(dt.timezone.utc)
    except OverflowError:
        raise ValueError("out of range") from None


def position(fields: Mapping[str, Any]) -> tuple[int, dt.datetime]:
    """``(after, watermark)`` from the fields of a page's cursor (``Page.next``); ValueError, TypeError or
    KeyError when they are not a position this feed gave out."""
    after, watermark = fields["after"], _utc(dt.datetime.fromisoformat(fields["watermark"]))
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= MAX_ID:
        raise ValueError("after is not an id")
    return after, watermark


async def declare_writes(conn: asyncpg.Connection, endpoint_id: int) -> None:
    """Declare that the current transaction writes change times of ``endpoint_id``'s segments and of no
    other endpoint's: until it ends it holds back that endpoint's watermark only. Must be the transaction's
    first statement (before it holds a transaction id or writes a change)."""
    await conn.execute(QUERIES["change_feed_declare"], endpoint_id)


async def watermark(conn: asyncpg.Connection, endpoint_id: int) -> dt.datetime:
    """The watermark of ``endpoint_id``'s feed (see the module's docstring): read before the page's query.

    Two statements: the clock is read before ``pg_locks`` and ``pg_stat_activity``, which are read before
    the page's snapshot.
    """
    now = await conn.fetchval(QUERIES["clock_now"])
    return await conn.fetchval(QUERIES["change_feed_watermark"], now, endpoint_id)


async def read_page(conn: asyncpg.Connection, endpoint_id: int, page: PageRequest,
                    fetch: Callable[[int, int], Awaitable[Sequence[asyncpg.Record]]]) -> Page:
    """One page of ``endpoint_id``'s rows: ``fetch(after_id, limit)`` returns rows with an ``id`` in id order."""
    mark = page.watermark or await watermark(conn, endpoint_id)
    rows = await fetch(page.after, page.limit + 1)
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    return Page(rows, {"after": rows[-1]["id"], "watermark": mark.isoformat()} if more else None, mark)
