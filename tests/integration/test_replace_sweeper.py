"""The background sweeper of a running app expires idle REPLACE sessions by itself."""

import dataclasses

from gateway.app import create_app
from gateway.jobs.sweepers import sweep_interval
from tests.conftest import AUTH
from tests.helpers import eventually, members_table, staging_table


async def test_running_app_expires_idle_sessions(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(dataclasses.replace(settings, replace_session_ttl=1.0)))
    segment_id = (await (await client.post("/v1/segments", json={"name": "s"}, headers=AUTH)).json())["result"][
        "segmentId"]
    await client.post(f"/v1/segments/{segment_id}/data", data="email\nkeep@x.com\n", headers=AUTH)
    response = await client.put(f"/v1/segments/{segment_id}/data?totalBatchCount=2&currentBatchNumber=1",
                                data="email\nnew@x.com\n", headers=AUTH)
    assert (await response.json())["result"]["replaceCommitted"] is False
    session_id = await db.fetchval("SELECT id FROM replace_sessions")
    assert await db.fetchval("SELECT to_regclass($1)", staging_table(session_id)) is not None

    async def closed() -> bool:
        return await db.fetchval("SELECT status FROM replace_sessions WHERE id = $1", session_id) != "open"

    await eventually(closed, "the sweeper to expire the idle session")
    assert await db.fetchval("SELECT status FROM replace_sessions WHERE id = $1", session_id) == "expired"
    assert await db.fetchval("SELECT to_regclass($1)", staging_table(session_id)) is None
    members = await db.fetch(f"SELECT identity FROM {members_table(segment_id)}")
    assert [row["identity"] for row in members] == ["keep@x.com"]


def test_sweep_interval_bounds():
    assert sweep_interval(24 * 3600) == 60
    assert sweep_interval(8) == 2
    assert sweep_interval(0.1) == 0.5
