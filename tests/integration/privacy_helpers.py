"""Helpers for the privacy tests: erasures through ``/api/privacy`` and waiting for them to end."""

from __future__ import annotations

from typing import Any

from tests.conftest import AUTH
from tests.helpers import eventually
from tests.integration.manage_helpers import api
from tests.integration.pull_helpers import sync_get

ENDED = ("SUCCEEDED", "FAILED")


async def erase(client, identities: list[str], headers: dict[str, str] = AUTH, **fields: Any) -> dict[str, Any]:
    """``POST /api/privacy/erase`` with a JSON list; the job as answered."""
    return (await api(client, "POST", "/api/privacy/erase", headers, json={"identities": identities, **fields})).result


async def erasure(client, job_id: int, headers: dict[str, str] = AUTH) -> dict[str, Any]:
    return (await api(client, "GET", f"/api/privacy/erase/{job_id}", headers)).result


async def wait_erased(client, job_id: int, headers: dict[str, str] = AUTH, timeout: float = 20.0) -> dict[str, Any]:
    """The erasure once it ended; it must have succeeded."""

    async def ended() -> dict[str, Any] | None:
        result = await erasure(client, job_id, headers)
        return result if result["status"] in ENDED else None

    result = await eventually(ended, f"erasure {job_id} to end", timeout)
    assert result["status"] == "SUCCEEDED", result
    return result


async def erase_and_wait(client, identities: list[str], headers: dict[str, str] = AUTH, **fields: Any) -> dict[str, Any]:
    job = await erase(client, identities, headers, **fields)
    assert job["status"] == "NEW" and type(job["id"]) is int, job
    return await wait_erased(client, job["id"], headers)


async def pulled(client, segment_id: str | int, headers: dict[str, str] | None = None) -> list[list[str]]:
    """A segment's rows through the direct pull (it must hold 1 to the sync limit members)."""
    return (await sync_get(client, segment_id, headers=headers)).table()[1]


def column(rows: list[list[str]], index: int = 0) -> set[str]:
    return {row[index] for row in rows}
