"""Applying one pushed batch to a segment's members (ADD, REMOVE; REPLACE stages in gateway.ingest.replace).

Every push follows one path: COPY the upload's records into a temporary ``incoming`` table (no lock
held while the body streams), then lock the segment, register new columns and apply one set-based
statement, all in one transaction.

The lock (gateway.audience.segments.hold_segment): ADD and REMOVE batches whose header registers nothing
apply side by side under a shared lock; each takes its members' row locks in identity order, so two
batches touching the same identities wait for each other (never deadlock) and, for one identity, the
result is that of some serial order of the calls. A batch registering columns (or creating the members
table), a REPLACE commit and a metadata change take it exclusively.

An ADD body small enough to be read into memory first (``add_direct``) takes the lock before it is parsed
and COPYs its rows straight into the members table, in the body's order; it never waits long for another
batch's row (it falls back to the merge, in identity order), so the rule above still holds.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from gateway.errors import Conflict, NotFound
from gateway.ops import metrics
from gateway.ingest.upload import ColumnPlan, ColumnRules, Upload, normalise_identity, plan_columns
from gateway.ingest.rejects import RejectSink
from gateway.audience.segments import hold_segment, require_pushable
from gateway.db.names import members_table, sql, table_names
from gateway.db.queries import QUERIES
from gateway.ingest.history import UploadEntry
from gateway.db.status import rows_affected

NORMALISE_STEP = 50_000  # identities read and written back per round trip by normalise_incoming


async def plan_upload(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, header: list[str],
                      rules: ColumnRules) -> ColumnPlan:
    """How this header maps onto the segment, read without a lock (the body streams on this plan)."""
    row = await conn.fetchrow(QUERIES["segment_columns"], segment_id, endpoint_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
    return plan_columns(header, row["identity_attribute"], row["attributes"], rules, row["identity_hashing"])


async def lock_to_apply(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, header: list[str],
                        rules: ColumnRules, streamed: ColumnPlan | None, upload: Upload) -> ColumnPlan:
    """The lock and plan of an ADD or REMOVE batch: shared when, read unlocked, the segment's identity is
    fixed, its members table exists and the header adds no attribute (identity and table stay, attributes
    only grow: so it stays true under the lock); else exclusive, as ``lock_and_register``. ``streamed``: the
    plan the body was streamed into ``incoming`` on (None: nothing streamed yet, the body follows this plan)."""
    row = await conn.fetchrow(QUERIES["segment_apply_mode"], segment_id, endpoint_id,
                              table_names(segment_id)["members"])
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
    if not (row["members_exist"] and row["identity_attribute"] is not None
            and not _registers(plan_columns(header, row["identity_attribute"], row["attributes"], rules,
                                            row["identity_hashing"]), row, rules)):
        return await lock_and_register(conn, endpoint_id, segment_id, header, rules, streamed, upload)
    await hold_segment(conn, segment_id, shared=True)
    row = await conn.fetchrow(QUERIES["segment_lock_shared"], segment_id, endpoint_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
    require_pushable(segment_id, row["status"], row["read_only"])
    plan = plan_columns(header, row["identity_attribute"], row["attributes"], rules, row["identity_hashing"])
    if _registers(plan, row, rules):
        raise AssertionError(f"segment {segment_id}: its identity or attributes changed under the shared lock")
    await _settle_identity(conn, plan, streamed, upload)
    return plan


def _registers(plan: ColumnPlan, row: asyncpg.Record, rules: ColumnRules) -> bool:
    """Whether applying ``plan`` changes the segment's columns (as ``row`` holds them)."""
    return rules.extends and (plan.identity_attribute != row["identity_attribute"]
                              or list(plan.attributes) != row["attributes"])


async def lock_and_register(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, header: list[str],
                            rules: ColumnRules, streamed: ColumnPlan | None, upload: Upload) -> ColumnPlan:
    """Take the segment's lock exclusively and settle the plan: new header names join the attributes in the same
    transaction as the data (a failed upload changes nothing); a REMOVE (``rules.extends`` false) changes
    no column. Attribute positions are applied in SQL. The attribute limit is checked again here, against
    the columns as they are under the lock (another upload may have added some while this body streamed).

    If another first upload fixed the segment's identity while this body streamed, the identity column
    differs from the one the rows were normalised on: normalise the new one (by the same Python rule), and
    count rows whose new identity is empty as invalid.
    """
    row = await lock_segment(conn, endpoint_id, segment_id)
    plan = plan_columns(header, row["identity_attribute"], row["attributes"], rules, row["identity_hashing"])
    await _settle_identity(conn, plan, streamed, upload)
    if _registers(plan, row, rules):
        await conn.execute(QUERIES["segment_set_columns"], segment_id, plan.identity_attribute,
                           list(plan.attributes))
    return plan


async def _settle_identity(conn: asyncpg.Connection, plan: ColumnPlan, streamed: ColumnPlan | None,
                           upload: Upload) -> None:
    """When the identity column differs from the one the body was normalised on (see lock_and_register).
    A segment whose identity hashing was set while the body streamed (it had no members then) takes none
    of it: the rows were normalised by the other rule (409, nothing applied)."""
    if streamed is None:
        return
    if plan.hashing != streamed.hashing:
        raise Conflict("the segment's identityHashing changed while the body streamed; nothing was applied, "
                       "send it again", code="identity_hashing_changed")
    if (plan.identity_index, plan.lowercase_identity) != (streamed.identity_index, streamed.lowercase_identity):
        await normalise_incoming(conn, plan)
        for dropped in await conn.fetch(QUERIES["incoming_drop_empty_identity"].format(**plan.sql_names())):
            upload.reject(dropped["ord"], f"empty identity ({plan.identity_attribute})", list(dropped)[1:])


async def normalise_incoming(conn: asyncpg.Connection, plan: ColumnPlan) -> None:
    """Normalise ``incoming``'s identity column in Python (``normalise_identity``: SQL's ``lower`` under
    ``COLLATE "C"`` would fold only ASCII), reading it through a cursor and writing back only what changed,
    ``NORMALISE_STEP`` rows at a time. Runs only in the race described in ``lock_and_register``."""
    names = plan.sql_names()
    rows = await conn.cursor(QUERIES["incoming_identities"].format(**names))
    while chunk := await rows.fetch(NORMALISE_STEP):
        changed = [(row["ord"], normalised) for row in chunk
                   if (normalised := normalise_identity(row["identity"], plan.lowercase_identity, plan.hashing))
                   != row["identity"]]
        if changed:
            ords, identities = zip(*changed)
            await conn.execute(QUERIES["incoming_set_identities"].format(**names), list(ords), list(identities))


async def lock_segment(conn: asyncpg.Connection, endpoint_id: int, segment_id: int) -> asyncpg.Record:
    """The segment's lock, exclusive (see the module docstring), and its row."""
    await hold_segment(conn, segment_id)
    row = await conn.fetchrow(QUERIES["segment_lock"], segment_id, endpoint_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
    # it may have been made inactive while the body streamed
    require_pushable(segment_id, row["status"], row["read_only"])
    return row


async def stream_incoming(conn: asyncpg.Connection, upload: Upload, plan: ColumnPlan, rejects: RejectSink) -> None:
    """COPY the upload's valid records into this transaction's ``incoming`` table, pausing to store its
    rejected rows whenever enough have gathered (gateway.ingest.rejects)."""
    await conn.execute(QUERIES["incoming_create"].format(**plan.sql_names()))
    while not upload.done:
        await conn.copy_records_to_table("incoming", records=upload.records(plan, pause=rejects.full),
                                         columns=plan.copy_columns())
        await rejects.flush(conn)


def suppression_key(plan: ColumnPlan, column: str) -> str:
    """SQL for the suppression list's form (lowercase hex SHA-256, gateway.privacy.suppressions) of the
    identity in ``column`` (a checked column name): a hashing segment's identities already are that hash."""
    return f"lower({column})" if plan.hashing else f"encode(sha256(convert_to({column}, 'UTF8')), 'hex')"


async def drop_suppressed(conn: asyncpg.Connection, endpoint_id: int, plan: ColumnPlan, upload: Upload) -> int:
    """Drop from ``incoming`` the rows whose identity is on the endpoint's suppression list: each is an
    invalid row (reason ``suppressed``, stored with the other rejects). One statement, after the segment's
    lock (a suppression committed before the lock is seen); it reads ``incoming`` only when the endpoint
    has suppressions at all. Returns how many rows it dropped."""
    names = plan.sql_names()
    fields = "ARRAY[" + ", ".join(f"i.c{i}" for i in range(plan.width)) + "]::text[]"
    query = QUERIES["incoming_drop_suppressed"].format(**names, key=suppression_key(plan, "i." + names["identity"]),
                                                       fields=fields)
    dropped = await conn.fetch(query, endpoint_id)
    for row in dropped:
        upload.suppress(row["ord"], row["fields"])
    return len(dropped)


async def add_members(conn: asyncpg.Connection, segment_id: int, plan: ColumnPlan, entry: UploadEntry) -> int:
    """Merge ``incoming`` into the segment: new identities are added, known ones get the new attributes.

    First as if every identity were new (``members_insert_new``, in a savepoint): a batch of new members, the
    usual ADD, then costs a plain INSERT. At its first known identity, in identity order, that statement stops
    with unique_violation and the merge (``members_add``) runs instead: a batch that overlaps the segment
    wastes at most the inserts before that identity, and one that re-sends members wastes almost nothing.
    A concurrent batch inserting the same identity makes the INSERT wait for it, as the merge would.
    """
    await conn.execute(sql("members_create", segment_id=segment_id))
    names = plan.sql_names()
    try:
        async with conn.transaction():
            inserted = rows_affected(await conn.execute(sql("members_insert_new", segment_id=segment_id, **names)))
        added = changed = inserted
    except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
        added, changed = await _merge(conn, segment_id, names)
    return await _record_add(conn, segment_id, added, changed, entry)


async def add_direct(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, plan: ColumnPlan,
                     upload: Upload, entry: UploadEntry) -> int:
    """Apply an ADD whose body is all in memory (``Upload.read_ahead``, up to ``GATEWAY_ADD_READ_AHEAD_BYTES``)
    under the lock ``lock_to_apply`` took with nothing streamed: its rows go by COPY straight into the members
    table, as psql's COPY does, so that parsing (the gateway's CPU) and inserting (PostgreSQL's) overlap. For
    a client that sends its batches one after another, that is most of an ADD's time (issue 15).

    This holds only while every identity is new: in a savepoint, the COPY stops at the first identity that
    is a member already or comes twice (unique_violation), or that another batch is inserting (a wait
    longer than ``add_direct_lock_timeout``, rows come in the body's order: two such batches could
    otherwise deadlock). Then the savepoint is rolled back, and what it held (the COPY text kept on the way)
    and the rest of the body are merged as ``add_members`` does. The COPY pauses whenever enough rejected rows
    have gathered: the part so far is kept (its savepoint released), the rejects stored outside any
    savepoint, and the next part goes on in a savepoint of its own; so memory stays bounded by the body.
    An endpoint with suppressions takes the ``incoming`` path (the check is after the lock, as there).
    """
    await conn.execute(sql("members_create", segment_id=segment_id))
    if await conn.fetchval(QUERIES["endpoint_has_suppressions"], endpoint_id):
        await stream_incoming(conn, upload, plan, entry.rejects)
        await drop_suppressed(conn, endpoint_id, plan, upload)
        await entry.rejects.flush(conn)
        return await add_members(conn, segment_id, plan, entry)
    schema, table = members_table(segment_id)
    added = changed = 0
    sent: list[bytes] = []  # the COPY text of the part in its savepoint
    direct = True
    while direct and not upload.done:
        try:
            async with conn.transaction():
                await conn.execute(QUERIES["add_direct_lock_timeout"])
                copied = rows_affected(await conn.copy_to_table(
                    table, schema_name=schema, columns=MEMBER_COLUMNS, format="text",
                    source=_kept(upload.records(plan, pause=entry.rejects.full, member_text=True), sent)))
                await conn.execute(QUERIES["lock_timeout_default"])
            added, changed, sent = added + copied, changed + copied, []
        except (asyncpg.UniqueViolationError, asyncpg.LockNotAvailableError):
            metrics.ADD_DIRECT_MERGED.inc()
            direct = False
        await entry.rejects.flush(conn)
    if not direct:
        await conn.execute(QUERIES["incoming_members_create"])
        await conn.copy_to_table("incoming", columns=MEMBER_COLUMNS, format="text", source=io.BytesIO(b"".join(sent)))
        while not upload.done:
            await conn.copy_to_table("incoming", columns=MEMBER_COLUMNS, format="text",
                                     source=upload.records(plan, pause=entry.rejects.full, member_text=True))
            await entry.rejects.flush(conn)
        merged = await _merge(conn, segment_id, {"identity": "identity", "attrs": "attrs"})
        added, changed = added + merged[0], changed + merged[1]
    return await _record_add(conn, segment_id, added, changed, entry)


MEMBER_COLUMNS = ("identity", "attrs")
MERGE_ATTEMPTS = 5  # members_add statements cut short by a deadlock before the batch fails


async def _merge(conn: asyncpg.Connection, segment_id: int, names: dict[str, str]) -> tuple[int, int]:
    """``members_add`` (added, changed), in identity order. A batch applying by ``add_direct`` takes rows in
    its body's order and gives up after a short wait, but the deadlock check of a merge waiting for it may
    come first: then this merge alone is rolled back (a savepoint) and runs again."""
    for attempt in range(1, MERGE_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                merged = await conn.fetchrow(sql("members_add", segment_id=segment_id, **names))
            return merged["added"], merged["changed"]
        except asyncpg.DeadlockDetectedError:
            if attempt == MERGE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _record_add(conn: asyncpg.Connection, segment_id: int, added: int, changed: int,
                      entry: UploadEntry) -> int:
    await conn.execute(QUERIES["segment_record_upload"], segment_id, added, changed > 0,
                       entry.row({"numAdded": added}))
    return added


async def _kept(pieces: AsyncIterator[bytes], kept: list[bytes]) -> AsyncIterator[bytes]:
    """``pieces`` of COPY text, each also appended to ``kept``."""
    async for piece in pieces:
        kept.append(piece)
        yield piece




async def remove_members(conn: asyncpg.Connection, segment_id: int, plan: ColumnPlan, entry: UploadEntry) -> int:
    await conn.execute(sql("members_create", segment_id=segment_id))
    removed = rows_affected(await conn.execute(sql("members_remove", segment_id=segment_id, **plan.sql_names())))
    await conn.execute(QUERIES["segment_record_upload"], segment_id, -removed, removed > 0,
                       entry.row({"numRemoved": removed}))
    return removed


def batch_result(segment_id: int, upload: Upload, **counts: Any) -> dict[str, Any]:
    """The Exchange result object; counts are strings, as in the source's examples."""
    result: dict[str, Any] = {"segmentId": str(segment_id), "numReceived": str(upload.received),
                              "numInvalid": str(upload.invalid)}
    for key, value in counts.items():
        result[key] = str(value) if key.startswith("num") else value
    if upload.suppressed:
        result["numSuppressed"] = str(upload.suppressed)  # of numInvalid: on the suppression list
    result["invalidSamples"] = upload.invalid_samples
    return result
