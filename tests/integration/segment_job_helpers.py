"""Helpers for the segment job tests: definitions written straight into the tables (the definitions API is
another module's), jobs through ``/api/segment/jobs``, and what the audiences hold."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.db.queries import QUERIES
from tests.conftest import AUTH
from tests.helpers import eventually
from tests.integration.manage_helpers import api
from tests.integration.push_helpers import csv_body, push_ok

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


async def source_with(client, db: asyncpg.Connection, name: str, header: list[str], rows: list[list[str]]) -> int:
    """A Contact List holding ``rows``; its id."""
    response = await client.post("/v1/segments", json={"name": name}, headers=AUTH)
    segment_id = int((await response.json())["result"]["segmentId"])
    if rows:
        await push_ok(client, str(segment_id), csv_body(header, rows))
    return segment_id


async def endpoint_of(db: asyncpg.Connection, segment_id: int) -> int:
    return await db.fetchval("SELECT endpoint_id FROM segments WHERE id = $1", segment_id)


async def define(db: asyncpg.Connection, endpoint_id: int, name: str, expression: str,
                 sources: list[int] | None, *, batch: bool = True) -> tuple[int, int]:
    """A definition and its Queries audience, as rows: (definition id, audience segment id)."""
    audience_id = await db.fetchval(QUERIES["segment_insert"], endpoint_id, name, "", "", "Queries", None)
    definition_id = await db.fetchval(
        "INSERT INTO segment_definitions (endpoint_id, name, name_key, expression, sources, batch_enabled, "
        "audience_segment_id) VALUES ($1, $2, lower($2), $3, $4, $5, $6) RETURNING id",
        endpoint_id, name, expression, sources, batch, audience_id)
    return definition_id, audience_id


async def post_job(client, segments: Any, headers: dict[str, str] = AUTH) -> dict[str, Any]:
    return (await api(client, "POST", "/api/segment/jobs", headers, json=segments)).result


async def job(client, job_id: str, headers: dict[str, str] = AUTH) -> dict[str, Any]:
    return (await api(client, "GET", f"/api/segment/jobs/{job_id}", headers)).result


async def run(client, *definition_ids: int | str, wanted: str = "SUCCEEDED") -> dict[str, Any]:
    """POST a job of the definitions and wait until it ends; it must end ``wanted``."""
    created = await post_job(client, {"segments": [{"segmentId": str(i)} for i in definition_ids]})
    return await wait_for(client, created["id"], wanted)


async def wait_for(client, job_id: str, wanted: str, headers: dict[str, str] = AUTH) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        answer = await job(client, job_id, headers)
        assert answer["status"] == wanted or answer["status"] not in FINAL, answer
        return answer if answer["status"] == wanted else None

    return await eventually(ended, f"segment job {job_id} to be {wanted}", 20)


async def members(db: asyncpg.Connection, segment_id: int) -> dict[str, list[str]]:
    """The audience's members table: {identity: attrs}."""
    if not await db.fetchval("SELECT to_regclass($1) IS NOT NULL", f"audience.members_{segment_id}"):
        return {}
    rows = await db.fetch(f"SELECT identity, attrs FROM audience.members_{int(segment_id)}")
    return {row["identity"]: list(row["attrs"]) for row in rows}


async def build_tables(db: asyncpg.Connection) -> list[str]:
    return [row["relname"] for row in await db.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'staging' AND c.relname LIKE 'segjob%' AND c.relkind = 'r' ORDER BY 1")]


async def waiting_for_table(db: asyncpg.Connection, table: str) -> bool:
    """Whether a backend waits for a lock on ``table`` (``schema.name``)."""
    return bool(await db.fetchval("SELECT count(*) FROM pg_locks WHERE relation = to_regclass($1) AND NOT granted",
                                  table))
