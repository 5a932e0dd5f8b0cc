"""A segment job's work: evaluate each of its definitions into its Queries audience.

Two phases, so that a job changes its audiences all at once or not at all, and holds locks only briefly:

1. Build (one transaction per definition, REPEATABLE READ so its profile count and its members come from
   one snapshot): share-lock the rows of the sources and of the segments ``inSegment`` reads (the first
   statement), resolve the sources, parse and compile the expression, and build the new members
   table ``staging.segjob_<job>_<attempt>_<definition>`` with ``CREATE TABLE … AS SELECT identity, attrs
   FROM (<profiles>) p WHERE <predicate>``, primary key after the load. No audience is touched and no
   audience lock is taken: readers carry on, and pushes to the sources stream on but wait at their end
   (for the segment's row lock) until the build ends, as they do for an export file. Without that lock a
   REPLACE committing after the snapshot began swaps in a new members table whose rows the snapshot cannot
   see: the build would read that source as empty and its members would silently exit. A push that
   committed after the snapshot began makes the lock fail (could not serialize): the build starts again,
   up to ``insegment.LOCK_TRIES`` times (gateway.segmentation.insegment).
2. Swap (one transaction for the whole job): for each built definition, in audience id order (two jobs
   take the locks in the same order), the segment's lock as a REPLACE commit takes it, the exact count of
   realized / existing / exited members (the previous audience FULL JOIN the new), then the swap by rename
   with the REPLACE commit's named queries, the segment's columns and member count (its change time moves),
   the job's metrics, and ``complete`` (or ``fail``) of the job in the same transaction.

An erasure (gateway.privacy.erase) that runs between a definition's build and its swap removes the identity
from the sources and the audience, but the build read the sources before: the swap would bring it back. So
the build reads the audience's ``erased_by`` in its snapshot, and the swap, holding the audience's apply
lock, reads it again: when it moved, the swap builds that definition again, in its own transaction, under
the lock. An erasure marks a definition's audience whenever a segment job of its endpoint runs, and goes
over definitions' audiences after every other segment (migration 0017), so an erasure the swap does not see
on the audience either committed before the build's snapshot or waits for the swap's lock and erases the
new audience after it.

So a job that is canceled, or whose lease is taken over, before its swap commits leaves every audience with
its previous members (the swap transaction completes the job only while the worker still holds it; a cancel
that comes first makes it roll back). What it leaves are build tables in ``staging``: the next segment job
drops those of every job, or attempt, that is no longer running.

A definition that cannot be evaluated (deleted since the job was created, its audience deleted, sources
no longer valid, an expression that no longer compiles, a database error while building) is recorded in the job's ``errors``
(``{code, msg, segmentId}``) and its audience keeps its previous members; the job goes on with the others
and SUCCEEDS. It FAILS only when it had definitions to evaluate and none could be.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from gateway.audience.changefeed import declare_writes
from gateway.audience.segments import hold_segment
from gateway.db.names import quoted, sql, table_names
from gateway.db.queries import QUERIES
from gateway.errors import GatewayError
from gateway.segmentation import compiler, insegment, pql
from gateway.segmentation.profiles import profiles_sql
from gateway.segmentation.sources import Profiles, resolve
from gateway.db.status import rows_affected

log = logging.getLogger(__name__)

Finish = Callable[[asyncpg.Connection], Awaitable[None]]
Fail = Callable[[asyncpg.Connection, str], Awaitable[None]]


class DefinitionError(Exception):
    """A definition the job cannot evaluate: recorded in the job's errors, its audience left as it was."""

    def __init__(self, definition_id: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.item = {"code": code, "msg": msg, "segmentId": str(definition_id)}


@dataclasses.dataclass
class Built:
    """A definition's new audience, built and waiting for the swap."""
    definition_id: int
    audience_id: int
    names: dict[str, str]  # its build table's (build_names)
    profiles: int
    members: int
    identity_attribute: str | None
    attributes: list[str]
    identity_hashing: str | None
    time_ms: float
    erased_by: int | None  # the audience's, as the build read it
    definition: asyncpg.Record


def build_names(job_id: int, attempt: int, definition_id: int) -> dict[str, str]:
    """The ``{build}`` names of a definition's build table (made from integers only)."""
    name = f"segjob_{int(job_id)}_{int(attempt)}_{int(definition_id)}"
    return {"build": quoted("staging", name), "build_pkey": quoted(f"{name}_pkey"),
            "build_moved": quoted("audience", name), "build_pkey_moved": quoted("audience", f"{name}_pkey")}


def _build_names_of(relname: str) -> dict[str, str]:
    """The names of a build table found in the catalog (``segjob_<job>_<attempt>_<definition>``)."""
    _prefix, job_id, attempt, definition_id = relname.split("_")
    return build_names(int(job_id), int(attempt), int(definition_id))


async def run_job(pool: asyncpg.Pool, job_id: int, endpoint_id: int, attempt: int, *, finish: Finish,
                  fail: Fail) -> None:
    """Evaluate the job's definitions, swap their audiences in, and ``finish`` (or ``fail``) the job in the
    transaction of the swap (see the module docstring)."""
    started = time.time()
    now = dt.datetime.now(dt.timezone.utc)
    async with pool.acquire() as conn:
        await drop_leftover_builds(conn)
        spec = await conn.fetchrow(QUERIES["segment_job_spec"], job_id)
        wanted = None if spec["all_definitions"] else list(spec["definition_ids"])
        definitions = await conn.fetch(QUERIES["segment_job_definitions"], endpoint_id, wanted)
        errors = [DefinitionError(i, "definition_not_found", f"segment definition {i} does not exist").item
                  for i in (wanted or []) if i not in {d["id"] for d in definitions}]
        built: list[Built] = []
        for definition in definitions:
            try:
                built.append(await _build(conn, endpoint_id, job_id, attempt, definition, now, isolated=True))
            except DefinitionError as exc:
                errors.append(exc.item)
        async with conn.transaction():
            await declare_writes(conn, endpoint_id)
            await conn.execute(QUERIES["replace_build_begin"])
            swapped = await _swap_all(conn, endpoint_id, job_id, attempt, now, built, errors)
            metrics = _metrics(swapped, started)
            await conn.execute(QUERIES["segment_job_result"], job_id, orjson.dumps(metrics).decode(),
                               orjson.dumps(errors).decode())
            if errors and not swapped:
                await fail(conn, "no definition of the job could be evaluated; its errors say why")
            else:
                await finish(conn)
    log.info("segment job %d %s: %d definitions evaluated, %d errors, %d ms", job_id,
             "failed" if errors and not swapped else "complete", len(swapped), len(errors),
             metrics["totalTime"]["totalTimeInMs"])


async def drop_leftover_builds(conn: asyncpg.Connection) -> None:
    """Drop the build tables of segment jobs (or attempts) that are no longer running."""
    for row in await conn.fetch(QUERIES["segment_job_leftover_builds"]):
        await conn.execute(QUERIES["segment_job_drop_build"].format(**_build_names_of(row["relname"])))


async def _build(conn: asyncpg.Connection, endpoint_id: int, job_id: int, attempt: int,
                 definition: asyncpg.Record, now: dt.datetime, *, isolated: bool) -> Built:
    """Build one definition's new audience into its build table: ``isolated``, in a REPEATABLE READ
    transaction of its own whose first statement share-locks the segments it reads (one snapshot, started
    again if a push to one of them committed since; gateway.segmentation.insegment); else in a savepoint of
    the swap's transaction (a build again, under the audience's lock), READ COMMITTED (each statement reads
    a snapshot of its own) and without the share lock: the swap holds audiences' locks that an erasure
    holding a source's row may be waiting for, and the lock could deadlock with it."""
    started = time.perf_counter()
    definition_id = definition["id"]

    async def build() -> Built:
        if isolated:
            await insegment.share_lock(conn, endpoint_id, definition["sources"],
                                       insegment.arguments_of(definition["expression"]))
        return await _build_in(conn, endpoint_id, job_id, attempt, definition, now, started)

    try:
        if isolated:
            return await insegment.repeatable_read(conn, build)
        async with conn.transaction():
            return await build()
    except asyncpg.PostgresError as exc:
        log.exception("segment job %d: definition %d could not be built", job_id, definition_id)
        raise DefinitionError(definition_id, "evaluation_failed",
                              f"the database could not evaluate definition {definition_id} "
                              f"({type(exc).__name__}); the gateway's log has the details") from None


async def _build_in(conn: asyncpg.Connection, endpoint_id: int, job_id: int, attempt: int,
                    definition: asyncpg.Record, now: dt.datetime, started: float) -> Built:
    """``_build``'s work, in its transaction."""
    definition_id = definition["id"]
    names = build_names(job_id, attempt, definition_id)
    await conn.execute(QUERIES["replace_build_begin"])  # memory for the joins, as a REPLACE build
    erased_by = await conn.fetchval(QUERIES["segment_job_erased_by"], definition["audience_segment_id"])
    try:  # invalid_sources, mixed_identity_hashing
        profiles = await resolve(conn, endpoint_id, definition["sources"])
        predicate, params = await _compile(conn, endpoint_id, definition_id, definition["expression"],
                                           profiles, now)
    except GatewayError as exc:
        raise DefinitionError(definition_id, exc.code, exc.message) from None
    present = [s.segment_id for s in profiles.sources if await members_exist(conn, s.segment_id)]
    relation = profiles_sql(profiles, present)
    count = await _count_profiles(conn, present, relation)
    await conn.execute(QUERIES["segment_job_drop_build"].format(**names))
    status = await conn.execute(sql("segment_job_build", profiles=relation, predicate=predicate, **names), *params)
    await conn.execute(QUERIES["segment_job_index_build"].format(**names))
    return Built(definition_id, definition["audience_segment_id"], names, count, rows_affected(status),
                 profiles.identity_attribute, list(profiles.attributes), profiles.identity_hashing,
                 (time.perf_counter() - started) * 1000,
                 erased_by, definition)


async def _count_profiles(conn: asyncpg.Connection, present: Sequence[int], relation: str) -> int:
    """How many profiles ``relation`` has: with one source, its exact member count (kept with its members,
    so this transaction's snapshot sees both alike), which saves a scan; else a count of the merge."""
    if len(present) == 1:
        return await conn.fetchval(QUERIES["segment_job_member_count"], present[0])
    return await conn.fetchval(sql("segment_job_count_profiles", profiles=relation))


async def members_exist(conn: asyncpg.Connection, segment_id: int) -> bool:
    """Whether the segment has a members table (a segment nothing was ever pushed to has none)."""
    return await conn.fetchval(QUERIES["job_members_exist"], table_names(segment_id)["members"])


async def _compile(conn: asyncpg.Connection, endpoint_id: int, definition_id: int, expression: str,
                   profiles: Profiles, now: dt.datetime) -> tuple[str, list[Any]]:
    """The definition's predicate over ``p`` and its parameters; DefinitionError when it no longer parses,
    names an attribute its sources do not have, or an inSegment segment the endpoint does not have."""
    try:
        node = pql.parse(expression)
        in_segments = await insegment.segment_tables(conn, endpoint_id, pql.segments_used(node))
        in_segments.require_hashing(profiles.identity_hashing)
        compiled = compiler.compile_predicate(node, attribute_index=profiles.index,
                                              segment_tables=in_segments.tables, now=now, first_param=1)
    except pql.ExpressionError as exc:
        raise DefinitionError(definition_id, "invalid_expression",
                              f"{exc.message} (at position {exc.position})") from None
    return compiled.sql, list(compiled.params)


async def _swap_all(conn: asyncpg.Connection, endpoint_id: int, job_id: int, attempt: int, now: dt.datetime,
                    built: list[Built], errors: list[dict[str, str]]) -> list[tuple[Built, Mapping[str, int]]]:
    """Swap every built audience in (see the module docstring); the ones swapped, with their counts.

    The apply locks are taken, and the counts made, first, in audience id order; then each audience's row
    lock (which readers wait for) only for its swap. An audience an erasure went over since its build is
    built again first."""
    counted: list[tuple[Built, Mapping[str, int]]] = []
    for item in sorted(built, key=lambda b: b.audience_id):
        started = time.perf_counter()
        await hold_segment(conn, item.audience_id)
        if await conn.fetchval(QUERIES["segment_job_erased_by"], item.audience_id) != item.erased_by:
            try:
                again = await _build(conn, endpoint_id, job_id, attempt, item.definition, now, isolated=False)
            except DefinitionError as exc:
                errors.append(exc.item)
                continue
            again.time_ms = item.time_ms  # the build again is timed with the swap
            item = again
        names = item.names
        if await members_exist(conn, item.audience_id):
            counts = dict(await conn.fetchrow(sql("segment_job_compare", segment_id=item.audience_id, **names)))
        else:
            counts = {"realized": item.members, "existing": 0, "exited": 0}
        item.time_ms += (time.perf_counter() - started) * 1000
        counted.append((item, counts))
    swapped = []
    for item, counts in counted:
        names = item.names
        if await conn.fetchrow(QUERIES["segment_lock"], item.audience_id, endpoint_id) is None:
            errors.append(DefinitionError(item.definition_id, "audience_deleted",
                                          f"the audience of definition {item.definition_id} (segment "
                                          f"{item.audience_id}) was deleted").item)
            await conn.execute(QUERIES["segment_job_drop_build"].format(**names))
            continue
        for step in ("segment_job_build_move", "segment_job_build_rename", "segment_job_build_rename_pkey",
                     "replace_drop_members", "replace_swap_members", "replace_rename_pkey"):
            await conn.execute(sql(step, segment_id=item.audience_id, **names))
        await conn.execute(QUERIES["segment_job_set_columns"], item.audience_id, item.identity_attribute,
                           item.attributes, item.identity_hashing)
        await conn.execute(QUERIES["segment_set_member_count"], item.audience_id, item.members)
        swapped.append((item, counts))
    return swapped


def _metrics(swapped: list[tuple[Built, Mapping[str, int]]], started: float) -> dict[str, Any]:
    """The job's metrics, in the hosted service's shape (keys: definition ids)."""
    start_ms, end_ms = int(started * 1000), int(time.time() * 1000)
    return {
        "totalTime": {"startTimeInMs": start_ms, "endTimeInMs": end_ms, "totalTimeInMs": end_ms - start_ms},
        "totalProfiles": sum(item.profiles for item, _counts in swapped),
        "segmentedProfileCounter": {str(item.definition_id): item.members for item, _counts in swapped},
        "segmentedProfileByStatusCounter": {
            str(item.definition_id): {key: int(counts[key]) for key in ("realized", "existing", "exited")}
            for item, counts in swapped},
        "segmentTimeInMs": {str(item.definition_id): round(item.time_ms) for item, _counts in swapped},
        "profilesByDefinition": {str(item.definition_id): item.profiles for item, _counts in swapped},
    }
