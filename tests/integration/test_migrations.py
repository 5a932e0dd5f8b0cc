import asyncio

import asyncpg
import orjson
import pytest

from gateway.db.migrations import apply_migrations, is_current, latest_version
from gateway.db.queries import QUERIES, migration_files
from gateway.ingest.history import entry_json

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
    monkeypatch.setattr("gateway.db.migrations.migration_files", lambda: [*real, ("9999_broken", broken)])
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await apply_migrations(conn)
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(real)
    finally:
        await conn.close()


async def test_history_written_before_0007_stays_readable(empty_database_url, monkeypatch):
    """0007 drops the late-retry flag; the rows an older gateway wrote (a late retry among them) still list."""
    real = migration_files()
    before = [(version, path) for version, path in real if version < "0007"]
    conn = await asyncpg.connect(empty_database_url)
    try:
        monkeypatch.setattr("gateway.db.migrations.migration_files", lambda: before)
        await apply_migrations(conn)
        segment = await conn.fetchval("INSERT INTO segments (endpoint_id, name) "
                                      "SELECT id, 'old' FROM endpoints RETURNING id")
        common = {"segment_id": segment, "method": "REPLACE", "total_batches": 1, "batch_number": 1,
                  "num_received": 2, "num_invalid": 0, "num_added": 2, "num_removed": None, "rejects_stored": 0,
                  "rejects_not_stored": 0, "ids": "", "category": "", "source_endpoint_id": "",
                  "source_segment_id": "", "request_id": "r", "started_at": "2026-01-01T00:00:00+00:00",
                  "duration_s": 0.5}
        for extra in ({"replace_session_id": 7, "replace_committed": True, "late_retry": False},
                      {"replace_session_id": None, "replace_committed": True, "late_retry": True}):
            await conn.fetchval("SELECT record_upload($1::jsonb)", orjson.dumps({**common, **extra}).decode())

        monkeypatch.setattr("gateway.db.migrations.migration_files", lambda: real)
        assert "0007_no_late_retry" in await apply_migrations(conn)
        late, staged = [entry_json(row) for row in await conn.fetch(QUERIES["upload_list"], segment, 2**62, 10)]
        assert (staged["replaceSessionId"], late["replaceSessionId"]) == (7, None)
        assert {key: late[key] for key in ("method", "numReceived", "numAdded", "replaceCommitted")} == \
            {"method": "REPLACE", "numReceived": 2, "numAdded": 2, "replaceCommitted": True}
        assert "lateRetry" not in late
    finally:
        await conn.close()


async def test_export_jobs_written_before_0010_get_their_kind(empty_database_url, monkeypatch):
    """0010 turns job_type into kind: an export job an older gateway wrote is of kind ExportSegmentData (and
    still answered by /v1/jobs, which asks for that kind); other kinds, without a segment, fit too."""
    real = migration_files()
    monkeypatch.setattr("gateway.db.migrations.migration_files",
                        lambda: [(version, path) for version, path in real if version < "0010"])
    conn = await asyncpg.connect(empty_database_url)
    try:
        await apply_migrations(conn)
        endpoint = await conn.fetchval("SELECT id FROM endpoints")
        segment = await conn.fetchval("INSERT INTO segments (endpoint_id, name) VALUES ($1, 'old') RETURNING id",
                                      endpoint)
        job = await conn.fetchval("INSERT INTO jobs (endpoint_id, segment_id, job_type) "
                                  "VALUES ($1, $2, 'ExportSegmentData') RETURNING id", endpoint, segment)

        monkeypatch.setattr("gateway.db.migrations.migration_files", lambda: real)
        assert "0010_job_kinds" in await apply_migrations(conn)
        assert await conn.fetchval("SELECT kind FROM jobs WHERE id = $1", job) == "ExportSegmentData"
        assert (await conn.fetchrow(QUERIES["job_get"], job, endpoint, "ExportSegmentData"))["status"] == "waiting"
        other = await conn.fetchrow(QUERIES["job_insert"], "SomeOtherKind", endpoint, None)
        assert await conn.fetchval("SELECT kind FROM jobs WHERE id = $1", other["id"]) == "SomeOtherKind"
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.fetchrow(QUERIES["job_insert"], "ExportSegmentData", endpoint, None)
    finally:
        await conn.close()
