"""Audiences as the segmentation guide shows them (``GET /api/audiences``), and which audiences one identity
is in (``GET /api/search/members``). A view over ``segments`` and their live ``segment_definitions``, not a
second store: every answer is read from those rows and the members tables.

- ``type``: ``SegmentDefinition`` for a Queries audience (a definition builds it), ``ExternalSegment`` for a
  pushed list (Contact Lists, Databases); ``namespace`` is the segment's type as stored.
- ``lifecycleState``: ``published`` for an active segment, ``inactive`` for an inactive one; deleted segments
  are not audiences.
- ``id`` is the segment id (what ``inSegment`` and ``/v1`` name); ``audienceId`` the definition id of a
  Queries audience, the segment id otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg

from gateway.audience.changefeed import iso
from gateway.db.queries import QUERIES
from gateway.ingest.upload import lowercases, normalise_identity

SORT_KEYS = ("name", "creationTime", "updateTime", "totalProfiles")
DEFAULT_SORT = ("updateTime", True)
LIFECYCLE = {"active": "published", "inactive": "inactive"}
PROBES_PER_STATEMENT = 100  # segments probed by one statement (one transaction) of a membership look-up


def describe(row: asyncpg.Record) -> dict[str, Any]:
    queries = row["type"] == "Queries"
    expression = row["expression"]
    return {
        "id": str(row["id"]),
        "audienceId": str(row["definition_id"] if row["definition_id"] is not None else row["id"]),
        "name": row["name"],
        "description": row["description"],
        "namespace": row["type"],
        "type": "SegmentDefinition" if queries else "ExternalSegment",
        "lifecycleState": LIFECYCLE[row["status"]],
        "expression": None if expression is None else {"type": "PQL", "format": "pql/text", "value": expression},
        "creationTime": iso(row["created_at"]),
        "updateTime": iso(row["updated_at"]),
        "metrics": {"totalProfiles": row["member_count"]},
    }


@dataclasses.dataclass(frozen=True)
class AudienceQuery:
    name: str | None = None  # contained in the name, any case
    description: str | None = None
    sort: str = DEFAULT_SORT[0]
    descending: bool = DEFAULT_SORT[1]
    start: int = 0
    limit: int = 100


@dataclasses.dataclass(frozen=True)
class AudiencePage:
    audiences: list[dict[str, Any]]
    total: int


async def audience_page(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int,
                        query: AudienceQuery) -> AudiencePage:
    rows = await conn.fetch(QUERIES["audience_page"], endpoint_id, query.name, query.description, query.sort,
                            query.descending, query.start, query.limit)
    return AudiencePage([describe(row) for row in rows if row["id"] is not None], rows[0]["total"])


def stored_identity(identity: str, identity_attribute: str, identity_hashing: str | None) -> str:
    """An identity as a segment stores it: the push's rule (gateway.ingest.upload.normalise_identity)."""
    return normalise_identity(identity, lowercases(identity_attribute), identity_hashing is not None)


async def memberships(conn: asyncpg.Connection, endpoint_id: int, identity: str) -> list[dict[str, Any]]:
    """Every audience of the endpoint that holds ``identity`` (normalised, and hashed where the segment
    hashes, as its pushes were), each with the identity's attribute values there; in segment id order.

    One primary-key probe per audience that has members, PROBES_PER_STATEMENT segments per statement: each
    statement is its own transaction, so a look-up holds at most that many table locks at once (the lock
    table holds max_locks_per_transaction × max_connections; a look-up over 1,000 segments in one
    transaction would take 1,000 of them)."""
    segments = await conn.fetch(QUERIES["membership_segments"], endpoint_id)
    probes = [(row, stored_identity(identity, row["identity_attribute"], row["identity_hashing"]))
              for row in segments]
    probes = [(row, stored) for row, stored in probes if stored]
    values: dict[int, list[str | None]] = {}
    for start in range(0, len(probes), PROBES_PER_STATEMENT):
        chunk = probes[start:start + PROBES_PER_STATEMENT]
        arguments = [row["id"] for row, _ in chunk], [stored for _, stored in chunk]
        try:
            found = await conn.fetch(QUERIES["audience_memberships"], *arguments)
        except asyncpg.UndefinedTableError:  # a segment purged while probed: probed again, it has no table
            found = await conn.fetch(QUERIES["audience_memberships"], *arguments)
        values.update((row["segment_id"], row["attrs"]) for row in found)
    result = []
    for row, _ in probes:
        attrs = values.get(row["id"])
        if attrs is not None:
            attributes = {name: attrs[i] if i < len(attrs) else None for i, name in enumerate(row["attributes"])}
            result.append({**describe(row), "attributes": attributes})
    return result
