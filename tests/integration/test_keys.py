"""API keys at run time: the in-process cache, revocation across processes, last-used times, throttling."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time

import pytest

from gateway import state
from gateway.auth import keys as auth
from gateway.app import create_app
from gateway.auth.cache import LISTENER_NAME
from tests.conftest import AUTH
from tests.helpers import eventually


async def newest_key_id(db) -> int:
    return await db.fetchval("SELECT max(id) FROM api_keys")


async def wait_listening(*apps, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not all(app[state.KEYS].listening for app in apps):
        assert time.monotonic() < deadline, "the revocation listener did not connect"
        await asyncio.sleep(0.01)


async def listener_pids(db) -> list[int]:
    return [row["pid"] for row in await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        LISTENER_NAME)]


async def has_new_listener(db, old_pid: int) -> bool:
    return any(pid != old_pid for pid in await listener_pids(db))


async def poll_until_refused(client, headers, timeout: float = 3) -> float:
    started = time.monotonic()
    while (await client.get("/v1/segments", headers=headers)).status != 401:
        assert time.monotonic() - started < timeout, "the revoked key is still accepted"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_a_second_request_does_not_look_the_key_up_again(client, make_key, monkeypatch):
    reader = await make_key("read")
    await wait_listening(client.app)  # connecting empties the cache (revocations may have been missed)
    lookups = []
    real_fetch = auth.fetch_key

    async def counting_fetch(conn, lookup_id):
        lookups.append(lookup_id)
        return await real_fetch(conn, lookup_id)

    monkeypatch.setattr(auth, "fetch_key", counting_fetch)
    for _ in range(3):
        assert (await client.get("/v1/segments", headers=reader)).status == 200
    assert len(lookups) == 1
    # An unknown key is not cached: each attempt is looked up (and counted by the throttle).
    for _ in range(2):
        assert (await client.get("/v1/segments", headers={"Authorization": "Bearer agw_unknown"})).status == 401
    assert len(lookups) == 3


async def test_expiry_is_checked_on_a_cached_key(client, make_key):
    expires_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.5)
    soon = await make_key("read", expires_at=expires_at)
    assert (await client.get("/v1/segments", headers=soon)).status == 200  # now cached
    await poll_until_refused(client, soon)
    assert dt.datetime.now(dt.timezone.utc) >= expires_at, "refused before it expired"


async def test_revocation_reaches_another_process_within_a_second(aiohttp_client, settings, make_key, db):
    first, second = await aiohttp_client(create_app(settings)), await aiohttp_client(create_app(settings))
    writer = await make_key("write")
    key_id = await newest_key_id(db)
    await wait_listening(first.app, second.app)
    for client in (first, second):
        assert (await client.get("/v1/segments", headers=writer)).status == 200  # now cached in both

    revoked = await auth.revoke_key(db, key_id)
    assert revoked["id"] == key_id and revoked["revoked_at"] is not None
    elapsed = await asyncio.gather(poll_until_refused(first, writer), poll_until_refused(second, writer))
    assert max(elapsed) < 1.0


async def test_listener_reconnects_after_losing_its_connection(client, make_key, db):
    reader = await make_key("read")
    key_id = await newest_key_id(db)
    await wait_listening(client.app)
    [old_pid] = await listener_pids(db)
    assert await db.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    await eventually(lambda: has_new_listener(db, old_pid), "the listener to reconnect")
    await wait_listening(client.app)
    assert (await client.get("/v1/segments", headers=reader)).status == 200
    await auth.revoke_key(db, key_id)
    assert await poll_until_refused(client, reader) < 1.0


async def test_revoking_twice_keeps_the_first_time_and_unknown_ids_are_none(db, make_key):
    await make_key("read")
    key_id = await newest_key_id(db)
    first = await auth.revoke_key(db, key_id)
    again = await auth.revoke_key(db, key_id)
    assert again["revoked_at"] == first["revoked_at"]
    assert await auth.revoke_key(db, 987654) is None


async def test_last_used_is_written_by_the_flush_not_per_request(client, make_key, db):
    reader = await make_key("read")
    key_id = await newest_key_id(db)
    before = dt.datetime.now(dt.timezone.utc)
    for _ in range(3):
        assert (await client.get("/v1/segments", headers=reader)).status == 200
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id) is None
    await client.app[state.KEYS].flush_last_used()
    last_used = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)
    assert last_used >= before


@pytest.fixture
async def strict_client(aiohttp_client, settings):
    app = create_app(dataclasses.replace(settings, auth_failure_limit=3, auth_failure_window=1.0))
    return await aiohttp_client(app)


async def test_repeated_failures_from_one_address_are_throttled(strict_client, make_key):
    bad = {"Authorization": "Bearer agw_guess"}
    for _ in range(10):  # successes never count
        assert (await strict_client.get("/v1/segments", headers=AUTH)).status == 200
    for _ in range(3):
        assert (await strict_client.get("/v1/segments", headers=bad)).status == 401
    started = time.monotonic()
    response = await strict_client.get("/v1/segments", headers=bad)
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"
    body = await response.json()
    assert body["responseStatus"] == "failure" and body["error"]["code"] == "too_many_failed_attempts"
    assert "agw_guess" not in await response.text()
    # The address is blocked without any key lookup, except for keys that authenticated recently in this
    # process (Exchange must not be locked out by someone guessing behind the same proxy).
    assert (await strict_client.get("/v1/segments", headers=AUTH)).status == 200
    never_seen = await make_key("read")
    assert (await strict_client.get("/v1/segments", headers=never_seen)).status == 429
    assert (await strict_client.get("/healthz")).status == 200  # only /v1 is guarded
    # Probe with a valid key: a probe with the bad one would itself count as a new failure.
    while (await strict_client.get("/v1/segments", headers=never_seen)).status == 429:
        assert time.monotonic() - started < 2, "the address stayed blocked beyond its window"
        await asyncio.sleep(0.05)
    assert (await strict_client.get("/v1/segments", headers=bad)).status == 401


async def test_throttling_can_be_turned_off(aiohttp_client, settings):
    client = await aiohttp_client(create_app(dataclasses.replace(settings, auth_failure_limit=0)))
    for _ in range(25):
        assert (await client.get("/v1/segments", headers={"Authorization": "Bearer agw_guess"})).status == 401


async def test_a_start_with_another_gateway_api_key_retires_the_previous_one(aiohttp_client, settings, make_key, db):
    """Changing GATEWAY_API_KEY replaces the bootstrap key: the old one answers 401, in the new process and
    (told by NOTIFY) in one still running; keys made otherwise are kept, and the same value again changes nothing."""
    running = await aiohttp_client(create_app(settings))  # GATEWAY_API_KEY = ADMIN_KEY
    other_key = await make_key("admin")
    await wait_listening(running.app)
    assert (await running.get("/v1/segments", headers=AUTH)).status == 200  # cached there

    new_key = "replacement-admin-key-" + "0123456789" * 3
    restarted = await aiohttp_client(create_app(dataclasses.replace(settings, api_key=new_key)))
    new_auth = {"Authorization": f"Bearer {new_key}"}
    assert (await restarted.get("/v1/segments", headers=AUTH)).status == 401
    assert (await restarted.get("/v1/segments", headers=new_auth)).status == 200
    assert await poll_until_refused(running, AUTH) < 1.0
    for client in (running, restarted):
        assert (await client.get("/v1/segments", headers=other_key)).status == 200

    again = await aiohttp_client(create_app(dataclasses.replace(settings, api_key=new_key)))
    assert (await again.get("/v1/segments", headers=new_auth)).status == 200
    rows = await db.fetch("SELECT label, bootstrap, revoked_at IS NOT NULL AS revoked FROM api_keys ORDER BY id")
    assert [tuple(row) for row in rows] == [("GATEWAY_API_KEY", True, True), ("", False, False),
                                           ("GATEWAY_API_KEY", True, False)]
