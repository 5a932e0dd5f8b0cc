"""What ``inSegment("…")`` reads, and the share lock of a snapshot that reads segments' members.

One rule for every caller (definitions, segment jobs, previews and estimates, export files): an argument
names a segment of the same endpoint (any type, not deleted; another endpoint's is answered like a missing
one) and reads its members table, or ``no_members`` (an empty relation) when nothing was ever pushed to
it. What an argument that names no such segment gets is the caller's: definitions answer 400
``unknown_segment``, the others leave it out of the tables, so the compiler raises its error at the
argument's position. The segments it reads must store identities as the sources do (``require_hashing``).

A REPLACE commit swaps a segment's members table by rename: a NEW table, whose rows a snapshot taken before
the commit cannot see. A reader whose snapshot began before the commit but that opens the table after it
would read the segment as empty. So a snapshot that reads members tables (a segment job's build, a preview
page, an estimate, an export file) share-locks the rows of the segments it reads as its first statement
(``share_lock``): a REPLACE commit takes the segment's row lock, so it waits for the reader to end; one that
committed after the snapshot makes the lock fail (could not serialize), and ``repeatable_read`` starts the
reader again, up to ``LOCK_TRIES`` times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from gateway.db.names import table_names
from gateway.db.queries import QUERIES
from gateway.ids import parse_int
from gateway.segmentation import pql
from gateway.segmentation.sources import SOURCE_TYPES, require_same_hashing

LOCK_TRIES = 10  # a push committing while the snapshot waits for a segment's row: start again

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class InSegments:
    """The segments an expression's ``inSegment`` arguments name."""
    tables: dict[str, str]  # argument (as written) → what it reads: a quoted members table or ``no_members``
    hashings: dict[int, str | None]  # segment id → its identityHashing
    unknown: list[str]  # the arguments that name no segment of the endpoint, in order

    def require_hashing(self, hashing: str | None) -> None:
        """400 ``mixed_identity_hashing`` when one stores identities otherwise than the sources (``hashing``)."""
        require_same_hashing(hashing, self.hashings, "the sources and the segments inSegment reads")


async def segment_tables(conn: asyncpg.Connection, endpoint_id: int, arguments: Sequence[str]) -> InSegments:
    """What each ``inSegment`` argument reads (see the module docstring)."""
    ids = {argument: parse_int(argument) for argument in arguments}
    found = {row["id"]: row for row in await conn.fetch(
        QUERIES["in_segment_segments"], endpoint_id, [i for i in ids.values() if i is not None])}
    tables = {argument: table_names(segment_id)["members"] if found[segment_id]["has_members"]
              else QUERIES["no_members"] for argument, segment_id in ids.items() if segment_id in found}
    return InSegments(tables, {segment_id: row["identity_hashing"] for segment_id, row in found.items()},
                      [argument for argument, segment_id in ids.items() if segment_id not in found])


def arguments_of(expression: str) -> list[str]:
    """The ``inSegment`` arguments of ``expression``; none when it does not parse (its reader says why)."""
    try:
        return pql.segments_used(pql.parse(expression))
    except pql.ExpressionError:
        return []


async def share_lock(conn: asyncpg.Connection, endpoint_id: int, sources: Sequence[int] | None,
                     arguments: Sequence[str]) -> None:
    """Share-lock the rows of the segments a snapshot reads: the ``sources`` (None: ``"*"``, every Contact
    List and Database of the endpoint) and the segments the ``inSegment`` ``arguments`` name. The first
    statement of the snapshot; asyncpg.SerializationError when one of them changed since it began."""
    ids = [i for i in map(parse_int, arguments) if i is not None]
    if sources is not None and not sources and not ids:
        return  # nothing to lock
    await conn.execute(QUERIES["segmentation_share_lock"], endpoint_id,
                       None if sources is None else list(sources), ids, list(SOURCE_TYPES))


async def repeatable_read(conn: asyncpg.Connection, read: Callable[[], Awaitable[T]]) -> T:
    """``read()`` in a REPEATABLE READ transaction whose first statement is ``share_lock``; started again
    when that lock fails because a push committed since the snapshot (the last failure is raised)."""
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            async with conn.transaction(isolation="repeatable_read"):
                return await read()
        except asyncpg.SerializationError:
            if attempt == LOCK_TRIES:
                raise
    raise AssertionError("unreachable")
