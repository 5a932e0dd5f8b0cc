"""Segment members: the per-segment tables, and applying one pushed batch (ADD, REMOVE, REPLACE).

Every push follows one path: COPY the upload's records into a temporary ``incoming`` table (no lock
held while the body streams), then lock the segment's row (calls on one segment apply one at a time,
in the order they reach the lock), register new columns and apply one set-based statement, all in one
transaction.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any

import asyncpg

from gateway.errors import NotFound
from gateway.ingest import ColumnPlan, Upload, plan_columns
from gateway.rejects import RejectSink
from gateway.segments import require_pushable
from gateway.sqlfiles import QUERIES

if TYPE_CHECKING:
    from gateway.uploads import UploadEntry

class Operation(enum.Enum):
    ADD = "ADD"
    REPLACE = "REPLACE"
    REMOVE = "REMOVE"


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """Where a batch sits in its share (query parameters; T = k = 1 when absent)."""

    total: int = 1
    number: int = 1
    ids: str = ""
    source_endpoint_id: str = ""
    source_segment_id: str = ""
    category: str = ""


def table_names(segment_id: int, session_id: int | None = None) -> dict[str, str]:
    """Identifiers for the SQL templates, built from integers only (never from request text)."""
    segment_id = int(segment_id)
    names = {
        "members": f"audience.members_{segment_id}",
        "members_name": f"members_{segment_id}",
        "members_pkey": f"members_{segment_id}_pkey",
        "members_new": f"audience.members_{segment_id}_new",
        "members_new_name": f"members_{segment_id}_new",
        "members_new_pkey": f"members_{segment_id}_new_pkey",
        "members_new_pkey_qualified": f"audience.members_{segment_id}_new_pkey",
    }
    if session_id is not None:
        names["staging"] = f"staging.replace_{int(session_id)}"
        names["staging_moved"] = f"audience.replace_{int(session_id)}"
    return names


def sql(name: str, segment_id: int, session_id: int | None = None, plan: ColumnPlan | None = None,
        **fragments: str) -> str:
    """A named query with its table names (and, for queries on ``incoming``, the upload's columns) filled in.

    ``fragments`` are further SQL pieces the caller built from integers only (e.g. export columns).
    """
    names = {**table_names(segment_id, session_id), **(plan.sql_names() if plan else {}), **fragments}
    return QUERIES[name].format(**names)


async def plan_upload(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, header: list[str],
                      ids: str | None) -> ColumnPlan:
    """How this header maps onto the segment, read without a lock (the body streams on this plan)."""
    row = await conn.fetchrow(QUERIES["segment_columns"], segment_id, endpoint_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
    return plan_columns(header, row["identity_attribute"], row["attributes"], ids)


async def lock_and_register(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, header: list[str],
                            ids: str | None, streamed: ColumnPlan, upload: Upload, *,
                            store_columns: bool = True) -> ColumnPlan:
    """Take the segment's lock and settle the plan: new header names join the attributes in the same
    transaction as the data (a failed upload changes nothing). Attribute positions are applied in SQL.
    A REMOVE (``store_columns`` false) reads only the identity column: its header changes no attribute.

    If another first upload fixed the segment's identity while this body streamed, the identity column
    differs from the one the rows were normalised on: normalise the new one in SQL, and count rows whose
    new identity is empty as invalid.
    """
    row = await lock_segment(conn, endpoint_id, segment_id)
    plan = plan_columns(header, row["identity_attribute"], row["attributes"], ids)
    if (plan.identity_index, plan.lowercase_identity) != (streamed.identity_index, streamed.lowercase_identity):
        await conn.execute(QUERIES["incoming_normalise_identity"].format(**plan.sql_names()),
                           plan.lowercase_identity)
        for dropped in await conn.fetch(QUERIES["incoming_drop_empty_identity"].format(**plan.sql_names())):
            upload.reject(dropped["ord"], f"empty identity ({plan.identity_attribute})", list(dropped)[1:])
    if store_columns and (plan.identity_attribute != row["identity_attribute"]
                          or list(plan.attributes) != row["attributes"]):
        await conn.execute(QUERIES["segment_set_columns"], segment_id, plan.identity_attribute,
                           list(plan.attributes))
    return plan


async def lock_segment(conn: asyncpg.Connection, endpoint_id: int, segment_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["segment_lock"], segment_id, endpoint_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
    require_pushable(segment_id, row["status"])  # it may have been made inactive while the body streamed
    return row


async def stream_incoming(conn: asyncpg.Connection, upload: Upload, plan: ColumnPlan, rejects: RejectSink) -> None:
    """COPY the upload's valid records into this transaction's ``incoming`` table, pausing to store its
    rejected rows whenever enough have gathered (gateway.rejects)."""
    await conn.execute(QUERIES["incoming_create"].format(**plan.sql_names()))
    while not upload.done:
        await conn.copy_records_to_table("incoming", records=upload.records(plan, pause=rejects.full),
                                         columns=plan.copy_columns())
        await rejects.flush(conn)


async def add_members(conn: asyncpg.Connection, segment_id: int, plan: ColumnPlan, entry: UploadEntry) -> int:
    """Merge ``incoming`` into the segment: new identities are added, known ones get the new attributes."""
    await conn.execute(sql("members_create", segment_id))
    merged = await conn.fetchrow(sql("members_add", segment_id, plan=plan))
    await conn.execute(QUERIES["segment_record_upload"], segment_id, merged["added"], merged["changed"] > 0,
                       entry.row({"numAdded": merged["added"]}))
    return merged["added"]


async def remove_members(conn: asyncpg.Connection, segment_id: int, plan: ColumnPlan, entry: UploadEntry) -> int:
    await conn.execute(sql("members_create", segment_id))
    status = await conn.execute(sql("members_remove", segment_id, plan=plan))
    removed = int(status.split()[-1])
    await conn.execute(QUERIES["segment_record_upload"], segment_id, -removed, removed > 0,
                       entry.row({"numRemoved": removed}))
    return removed


def batch_result(segment_id: int, upload: Upload, **counts: Any) -> dict[str, Any]:
    """The Exchange result object; counts are strings, as in the source's examples."""
    result: dict[str, Any] = {"segmentId": str(segment_id), "numReceived": str(upload.received),
                              "numInvalid": str(upload.invalid)}
    for key, value in counts.items():
        result[key] = str(value) if key.startswith("num") else value
    result["invalidSamples"] = upload.invalid_samples
    return result
