"""An endpoint's suppression list: identities its pushes skip (ADD and REPLACE count such a row invalid,
reason ``suppressed``: gateway.ingest.apply.drop_suppressed). Filled by erasures with ``suppress``; held as
hashes only (gateway.privacy.identities.identity_hashes), so the list itself names nobody."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.audience.changefeed import iso
from gateway.db.queries import QUERIES
from gateway.privacy.identities import identity_hashes
from gateway.db.status import rows_affected


async def page(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, after: str,
               limit: int) -> list[asyncpg.Record]:
    """The endpoint's suppressions in hash order, after hash ``after``."""
    return await conn.fetch(QUERIES["suppression_page"], endpoint_id, after, limit)


def describe(row: asyncpg.Record) -> dict[str, Any]:
    return {"identitySha256": row["identity_sha256"], "erasure": row["job_id"], "createdAt": iso(row["created_at"])}


async def remove(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, identities: list[str]) -> int:
    """Take identities (plaintext, or their SHA-256 as the list shows it) off the list; how many entries went."""
    hashes = sorted({value for identity in identities for value in identity_hashes(identity)})
    status = await conn.execute(QUERIES["suppression_delete"], endpoint_id, hashes)
    return rows_affected(status)
