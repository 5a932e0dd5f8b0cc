"""Helpers for the ``/api`` management tests: calling the routes and changing a segment's status."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.conftest import AUTH
from tests.integration.push_helpers import Reply


async def api(client, method: str, path: str, headers: dict[str, str] = AUTH, **options: Any) -> Reply:
    response = await client.request(method, path, headers=headers, **options)
    return Reply(response.status, await response.text(), response.content_type)


async def set_status(client, segment_id: str | int, status: str) -> dict[str, Any]:
    """PATCH the status (``deleted`` is a soft delete); the segment as answered."""
    return (await api(client, "PATCH", f"/api/segments/{segment_id}", json={"status": status})).result


async def list_all(client, query: str = "", headers: dict[str, str] = AUTH, *, limit: int = 1000,
                   path: str = "/api/segments", items: str = "segments") -> tuple[list[dict[str, Any]], str]:
    """Every page of a listing; (items, the first page's nextUpdatedSince)."""
    separator = "&" if query else ""
    result = (await api(client, "GET", f"{path}?{query}{separator}limit={limit}", headers)).result
    found, watermark = list(result[items]), result["nextUpdatedSince"]
    while result["nextCursor"] is not None:
        result = (await api(client, "GET", f"{path}?{query}{separator}limit={limit}&cursor={result['nextCursor']}",
                            headers)).result
        assert result["nextUpdatedSince"] == watermark, "every page carries the first page's watermark"
        found += result[items]
    return found, watermark


async def ids_of(client, query: str = "", headers: dict[str, str] = AUTH) -> list[int]:
    return [segment["id"] for segment in (await list_all(client, query, headers))[0]]


async def segment_row(db: asyncpg.Connection, segment_id: str | int) -> dict[str, Any]:
    """What PostgreSQL holds for the segment (not what the API says)."""
    return dict(await db.fetchrow("SELECT * FROM segments WHERE id = $1", int(segment_id)))
