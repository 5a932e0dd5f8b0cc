"""Previews: who a PQL expression selects from its sources, page by page, before it becomes a definition.

A preview stores only its definition (expression, sources, endpoint) and the "now" its relative dates are
computed against, never its members: each page is evaluated live over the profiles (gateway.segmentation.
profiles) with a keyset on identity (``WHERE identity > <last of the previous page> ORDER BY identity``,
byte order). So the pages are stable while pushes go on: a member that stays in the result through the
reads is listed exactly once and none is skipped (members added or removed meanwhile may or may not
appear, as in any live listing), a page costs one index range scan with one source, creating a preview
costs no scan at all, and a preview holds no personal data (privacy's erase has nothing to remove from it).
Previews expire after ``GATEWAY_PREVIEW_TTL`` (then 404, like a deleted or another endpoint's one).

A page (and an estimate, gateway.segmentation.estimates) reads its sources in one REPEATABLE READ snapshot
whose first statement share-locks their rows (``prepare``; gateway.segmentation.insegment): a REPLACE of a
source waits for the page instead of swapping in a members table the snapshot would read as empty.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.db.names import sql
from gateway.db.queries import QUERIES
from gateway.errors import BadRequest, NotFound
from gateway.ids import parse_int
from gateway.segmentation import compiler, insegment, pql
from gateway.segmentation.evaluate import members_exist
from gateway.segmentation.profiles import listed_profiles_sql, profiles_sql, sampled_profiles_sql
from gateway.segmentation.sources import Profiles, resolve

STATE_READY = "RESULT_READY"
STATE_FAILED = "FAILED"
MERGE_BATCH = 1000  # identities read from each source at a time by a page over several sources


def unknown_preview(preview_id: object) -> NotFound:
    """Another endpoint's, an expired or a deleted preview is answered exactly like one that never was."""
    return NotFound(f"preview {preview_id} does not exist", code="preview_not_found")


def parse_preview_id(text: str) -> int:
    preview_id = parse_int(text, 1)
    if preview_id is None:
        raise unknown_preview(text)
    return preview_id


def expression_error(exc: pql.ExpressionError) -> BadRequest:
    """The 400 of an expression that does not parse or compile over its sources (as definitions answer)."""
    return BadRequest(f"predicateExpression: {exc.message} (at position {exc.position})", code="invalid_expression",
                      extra={"position": exc.position})


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A preview's expression compiled over its sources, in the transaction that reads them."""
    profiles: Profiles
    present: list[int]  # the sources that have a members table
    predicate: str
    params: list[Any]
    used: list[tuple[str, int]]  # the attributes the expression reads, as written, and their index in attrs

    def relation(self) -> str:
        return profiles_sql(self.profiles, self.present)

    def sample(self, method: str) -> str:
        return sampled_profiles_sql(self.profiles, self.present, method)


async def prepare(conn: asyncpg.Connection, endpoint_id: int, expression: str, sources: Sequence[int] | None,
                  now: dt.datetime, *, first_param: int = 1) -> Prepared:
    """Resolve the sources and compile the expression over them. In the snapshot that reads the profiles,
    call it first (``read``): its first statement share-locks the segments it reads (a REPLACE of one then
    waits for the snapshot to end; gateway.segmentation.insegment). 400 ``invalid_sources`` /
    ``invalid_expression`` (with its position), ``mixed_identity_hashing``."""
    await insegment.share_lock(conn, endpoint_id, sources, insegment.arguments_of(expression))
    profiles = await resolve(conn, endpoint_id, sources)
    try:
        node = pql.parse(expression)
        in_segments = await insegment.segment_tables(conn, endpoint_id, pql.segments_used(node))
        in_segments.require_hashing(profiles.identity_hashing)
        compiled = compiler.compile_predicate(node, attribute_index=profiles.index,
                                              segment_tables=in_segments.tables, now=now, first_param=first_param)
    except pql.ExpressionError as exc:
        raise expression_error(exc) from None
    used = [(name, index) for name in pql.attributes_used(node) if (index := profiles.index(name)) is not None]
    present = [s.segment_id for s in profiles.sources if await members_exist(conn, s.segment_id)]
    return Prepared(profiles, present, compiled.sql, list(compiled.params), used)


async def create_preview(conn: asyncpg.Connection, endpoint_id: int, expression: str, sources: Sequence[int] | None,
                         ttl: float) -> int:
    """A new preview, after checking that its expression compiles over its sources (400 otherwise)."""
    async with conn.transaction():
        await prepare(conn, endpoint_id, expression, sources, dt.datetime.now(dt.timezone.utc))
        return await conn.fetchval(QUERIES["preview_insert"], endpoint_id, expression,
                                   None if sources is None else list(sources), ttl)


async def get_preview(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, preview_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["preview_get"], preview_id, endpoint_id)
    if row is None:
        raise unknown_preview(preview_id)
    return row


async def delete_preview(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, preview_id: int) -> None:
    if await conn.fetchval(QUERIES["preview_delete"], preview_id, endpoint_id) is None:
        raise unknown_preview(preview_id)


@dataclasses.dataclass(frozen=True)
class Page:
    state: str
    results: list[dict[str, Any]]
    last: str | None  # the identity the next page starts after; None on the last page
    error: dict[str, Any] | None = None


async def read_page(conn: asyncpg.Connection, endpoint_id: int, preview: asyncpg.Record, *, limit: int,
                    after: str | None) -> Page:
    """Up to ``limit`` profiles the preview's expression selects, after identity ``after`` in byte order.
    A preview whose sources or expression no longer hold (a source deleted, an attribute gone) is FAILED,
    with the error its creation would now get."""

    async def read() -> Page:
        try:
            prepared = await prepare(conn, endpoint_id, preview["expression"], preview["sources"],
                                     preview["evaluated_at"])
        except BadRequest as exc:
            return Page(STATE_FAILED, [], None, {"code": exc.code, "message": exc.message, **exc.extra})
        if len(prepared.present) <= 1:  # a keyset on one source is an index range scan
            rows = await _select(conn, prepared, prepared.relation(), [], after, limit + 1)
        else:
            rows = await _merged(conn, prepared, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        results = [{"identity": row["identity"], **{name: value for (name, _index), value in
                                                     zip(prepared.used, row["values"])}} for row in rows]
        return Page(STATE_READY, results, rows[-1]["identity"] if more else None)

    return await insegment.repeatable_read(conn, read)


async def _select(conn: asyncpg.Connection, prepared: Prepared, relation: str, more_params: list[Any],
                  after: str | None, count: int) -> list[asyncpg.Record]:
    """The first ``count`` profiles of ``relation`` (its own parameters ``more_params`` follow the
    predicate's) after identity ``after`` that the predicate keeps, in identity order."""
    params = [*prepared.params, *more_params]
    keyset = ""
    if after is not None:
        params.append(after)
        keyset = f" AND p.identity > ${len(params)}"
    params.append(count)
    # coalesce: a row pushed before its segment had the attribute has no value of it
    values = ", ".join("coalesce(p.attrs[%d], '')" % index for _name, index in prepared.used)
    return await conn.fetch(sql("preview_page", values=f"ARRAY[{values}]::text[]", profiles=relation,
                                predicate=prepared.predicate, after=keyset, limit=f"${len(params)}"), *params)


async def _merged(conn: asyncpg.Connection, prepared: Prepared, after: str | None,
                  count: int) -> list[asyncpg.Record]:
    """With several sources: the next ``MERGE_BATCH`` identities of each source's primary key after the
    cursor, merged (only those up to the lowest last identity of a source that had more are complete), and
    their profiles evaluated by primary-key lookups; again from there until ``count`` profiles are kept or
    the sources end. So a page reads about as many rows as it skips, as with one source, whatever the
    sources' size (PostgreSQL plans a merge of several sources as a sort of all of them)."""
    relation = listed_profiles_sql(prepared.profiles, prepared.present, f"${len(prepared.params) + 1}")
    kept: list[asyncpg.Record] = []
    cursor = after or ""  # no identity is empty
    while len(kept) < count:
        batches = [[row["identity"] for row in await conn.fetch(sql("preview_next_identities", segment_id=source),
                                                                 cursor, MERGE_BATCH)]
                   for source in prepared.present]
        ends = [batch[-1] for batch in batches if len(batch) == MERGE_BATCH]
        bound = min(ends) if ends else None
        candidates = sorted({identity for batch in batches for identity in batch
                             if bound is None or identity <= bound})
        if candidates:
            kept += await _select(conn, prepared, relation, [candidates], None, count - len(kept))
        if bound is None:
            break
        cursor = bound
    return kept
