"""Health, readiness and the failure envelope on every kind of error."""

import io
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from gateway import state
from gateway.app import create_app
from tests.conftest import AUTH


async def test_healthz_and_readyz_need_no_key(client):
    for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
        response = await client.get(path)
        assert response.status == 200
        assert (await response.json())["result"]["status"] == status


async def test_readyz_is_503_when_the_database_is_not_migrated(client, db):
    await db.execute("DELETE FROM schema_migrations")
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "not_migrated"


async def test_readyz_and_v1_are_503_when_the_database_is_gone(client, cluster, database_url):
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(cluster.admin_url)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "database_unavailable"
        listing = await client.get("/v1/segments", headers=AUTH)
        assert listing.status == 503
        assert (await listing.json())["responseStatus"] == "failure"
    finally:
        await admin.close()


async def test_unknown_route_and_wrong_method_are_json(client):
    response = await client.get("/nowhere")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert (await response.json())["error"]["code"] == "not_found"
    response = await client.patch("/v1/segments", headers=AUTH)
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_json_body_over_the_limit_is_413(client):
    body = io.BytesIO(b"{" + b" " * (2 * 1024 * 1024) + b"}")
    response = await client.post("/v1/segments", data=body, headers=AUTH)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"


async def test_unhandled_exception_is_500_without_traceback(aiohttp_client, settings, caplog):
    app = create_app(settings)

    async def explode(request):
        raise RuntimeError("secret internals")

    app.router.add_get("/v1/explode", explode)
    client = await aiohttp_client(app)
    response = await client.get("/v1/explode", headers=AUTH)
    assert response.status == 500
    text = await response.text()
    assert "secret internals" not in text and "Traceback" not in text
    assert (await response.json())["error"]["code"] == "internal_error"
    assert "secret internals" in caplog.text


async def test_bootstrap_key_is_idempotent_and_admin(client, db):
    rows = await db.fetch("SELECT scope, endpoint_id FROM api_keys")
    assert [(row["scope"], row["endpoint_id"]) for row in rows] == [("admin", 1)]
    stored = await db.fetchval("SELECT secret_hash FROM api_keys")
    assert AUTH["Authorization"].split()[1].encode() not in stored


async def test_generated_key_when_none_exists(aiohttp_client, settings, db):
    import dataclasses
    await db.execute("DELETE FROM api_keys")
    app = create_app(dataclasses.replace(settings, api_key=None))
    client = await aiohttp_client(app)
    generated = app[state.GENERATED_KEY]
    assert generated.startswith("agw_") and len(generated) >= 40
    response = await client.get("/v1/segments", headers={"Authorization": f"Bearer {generated}"})
    assert response.status == 200
    app2 = create_app(dataclasses.replace(settings, api_key=None))
    await aiohttp_client(app2)
    assert state.GENERATED_KEY not in app2
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 1


async def test_old_server_version_is_refused(monkeypatch, database_url):
    from gateway.db import pool as database
    from gateway.errors import DatabaseUnavailable
    monkeypatch.setattr(database, "MIN_SERVER_VERSION", 990000)
    try:
        await database.create_pool(database_url)
    except DatabaseUnavailable as exc:
        assert "needs 15 or newer" in str(exc)
    else:
        raise AssertionError("an old server must be refused")


async def test_unreachable_server_is_one_clear_error():
    from gateway.db.pool import create_pool
    from gateway.errors import DatabaseUnavailable
    try:
        await create_pool("postgresql://nobody:secret@127.0.0.1:1/none")
    except DatabaseUnavailable as exc:
        assert "cannot reach PostgreSQL" in str(exc) and "secret" not in str(exc)
    else:
        raise AssertionError("unreachable server must raise")


async def test_pool_is_app_state(client):
    assert isinstance(client.app[state.POOL], asyncpg.Pool)
    assert isinstance(client.app, web.Application)
