import asyncio

import asyncpg
import pytest

from gateway.migrations import apply_migrations, is_current, latest_version
from gateway.sqlfiles import migration_files

pytestmark = pytest.mark.pg15


@pytest.fixture
async def empty_database_url(cluster):
    name = await cluster.create_database(migrated=False)
    yield cluster.url(name)
    await cluster.drop_database(name)


async def test_applies_every_migration_once_then_nothing(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert not await is_current(conn)
        first = await apply_migrations(conn)
        assert first == [version for version, _ in migration_files()]
        assert await is_current(conn)
        assert await apply_migrations(conn) == []
        recorded = [row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")]
        assert recorded == first
        assert await conn.fetchval("SELECT name FROM endpoints") == "default"
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_migration_once(empty_database_url):
    conns = [await asyncpg.connect(empty_database_url) for _ in range(5)]
    try:
        results = await asyncio.gather(*(apply_migrations(conn) for conn in conns))
        applied = [version for result in results for version in result]
        assert sorted(applied) == [version for version, _ in migration_files()]
        assert await conns[0].fetchval("SELECT count(*) FROM endpoints") == 1
        assert await conns[0].fetchval("SELECT max(version) FROM schema_migrations") == latest_version()
    finally:
        for conn in conns:
            await conn.close()


async def test_failed_migration_leaves_nothing_behind(empty_database_url, monkeypatch, tmp_path):
    broken = tmp_path / "9999_broken.sql"
    broken.write_text("CREATE TABLE half_done (id int); SELECT 1/0;")
    real = migration_files()
    monkeypatch.setattr("gateway.migrations.migration_files", lambda: [*real, ("9999_broken", broken)])
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await apply_migrations(conn)
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(real)
    finally:
        await conn.close()
