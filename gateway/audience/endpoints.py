"""Endpoints (tenants): every segment, job and key belongs to exactly one. No HTTP here."""

from __future__ import annotations

import re

import asyncpg

from gateway.db.queries import QUERIES

# Names appear in command output and logs: keep them to one plain word.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def valid_name(name: str) -> bool:
    return NAME_PATTERN.match(name) is not None


async def create_endpoint(conn: asyncpg.Connection, name: str) -> int | None:
    """The new endpoint's id, or None when one with that name exists already."""
    return await conn.fetchval(QUERIES["endpoint_insert"], name)


async def endpoint_id(conn: asyncpg.Connection, name: str) -> int | None:
    return await conn.fetchval(QUERIES["endpoint_id"], name)


async def list_endpoints(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(QUERIES["endpoint_list"])
