"""``segments export`` and ``segments import [--dry-run]``: the real command against the test's database."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from tests.acceptance.test_cli import run_cli
from tests.conftest import AUTH
from tests.integration.manage_helpers import api, segment_row
from tests.integration.push_helpers import create_segment, push_ok

pytestmark = pytest.mark.pg15


async def cli(database_url: str, *args: str):
    return await asyncio.to_thread(run_cli, "segments", *args, "--database-url", database_url, env={})


async def export(database_url: str, *args: str) -> list[dict]:
    result = await cli(database_url, "export", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["segments"]


async def all_rows(db) -> list[dict]:
    return [dict(row) for row in await db.fetch("SELECT * FROM segments ORDER BY id")]


async def test_export_shows_what_the_api_shows(client, database_url, make_key):
    first = await create_segment(client, "first")
    await push_ok(client, first, "email,city\na@x.com,Paris\n")
    theirs = await make_key("admin", endpoint="acme")
    other = await create_segment(client, "theirs", headers=theirs)
    await api(client, "DELETE", f"/api/segments/{other}", theirs)

    exported = await export(database_url)
    assert exported == [(await api(client, "GET", f"/api/segments/{first}")).result,
                        (await api(client, "GET", f"/api/segments/{other}", theirs)).result]
    assert [s["id"] for s in await export(database_url, "--endpoint", "acme")] == [int(other)]
    missing = await cli(database_url, "export", "--endpoint", "nope")
    assert missing.returncode == 1 and "no endpoint named 'nope'" in missing.stderr


async def test_import_dry_run_then_for_real(client, database_url, db, tmp_path):
    kept, renamed, retired = [int(await create_segment(client, name)) for name in ("kept", "renamed", "retired")]
    records = await export(database_url)
    unchanged = tmp_path / "unchanged.json"
    unchanged.write_text(json.dumps({"segments": records}))
    records[1]["name"], records[1]["description"] = "Renamed", "now described"
    records[2]["status"] = "inactive"
    records.append({"id": 100, "endpoint": "default", "name": "Imported", "type": "Databases",
                    "identityAttribute": "Email", "attributes": ["Email", "City"]})
    changed = tmp_path / "segments.json"
    changed.write_text(json.dumps({"segments": records}))
    before = await all_rows(db)

    dry = await cli(database_url, "import", str(changed), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"segment {renamed}: name 'renamed' -> 'Renamed'",
        f"segment {renamed}: description '' -> 'now described'",
        f"segment {retired}: status 'active' -> 'inactive'",
        "segment 100: created endpoint='default' name='Imported'",
        "would change 3 of 4 segment(s) (dry run: nothing was changed)",
    ]
    assert await all_rows(db) == before, "a dry run changes nothing"
    assert int(await create_segment(client, "after dry run")) == retired + 1, "nor the id sequence"

    real = await cli(database_url, "import", str(changed))
    assert real.returncode == 0, real.stderr
    assert real.stdout.splitlines()[:-1] == dry.stdout.splitlines()[:-1]
    assert real.stdout.splitlines()[-1] == "changed 3 of 4 segment(s)"
    assert (await segment_row(db, kept)) == before[0]
    shown = (await api(client, "GET", f"/api/segments/{renamed}")).result
    assert (shown["name"], shown["description"]) == ("Renamed", "now described")
    assert (await api(client, "GET", f"/v1/segments/{retired}")).result["status"] == "inactive"
    imported = (await api(client, "GET", "/api/segments/100")).result
    assert (imported["name"], imported["type"], imported["identityAttribute"], imported["attributes"]) == \
        ("Imported", "Databases", "Email", ["Email", "City"])
    await push_ok(client, "100", "city,email\nRome,B@x.com\n")
    assert await db.fetchval("SELECT identity FROM audience.members_100") == "b@x.com"
    assert int(await create_segment(client, "next")) == 101, "new segments get ids after imported ones"

    again = await cli(database_url, "import", str(changed))
    assert again.stdout.splitlines() == ["changed 0 of 4 segment(s)"]


@pytest.mark.parametrize("document, code, message", [
    ("not json", 2, "is not JSON"),
    ('[{"id": 1}]', 2, 'must hold {"segments": [...]}'),
    ('{"segments": [{"id": "1"}]}', 2, "id must be a positive integer"),
    ('{"segments": [{"id": 1, "name": ""}]}', 2, "name must not be empty"),
    ('{"segments": [{"id": 1, "status": "gone"}]}', 2, "status must be one of"),
    ('{"segments": [{"id": 1, "colour": "red"}]}', 2, "unknown field(s) colour"),
    ('{"segments": [{"id": 1}, {"id": 1}]}', 2, "id 1 appears twice"),
    ('{"segments": [{"id": 1, "identityHashing": "md5"}]}', 2, "identityHashing must be null or one of sha256"),
    ('{"segments": [{"id": 1, "name": "x"}, {"id": 50, "name": "new"}]}', 1, "needs its endpoint and name"),
    ('{"segments": [{"id": 1, "name": "x"}, {"id": 2, "endpoint": "acme"}]}', 1, "import does not move segments"),
])
async def test_bad_imports_change_nothing(client, database_url, db, tmp_path, make_key, document, code, message):
    await create_segment(client, "one")
    await create_segment(client, "two")
    await make_key("read", endpoint="acme")
    before = await all_rows(db)
    path = tmp_path / "bad.json"
    path.write_text(document)
    result = await cli(database_url, "import", str(path))
    assert (result.returncode, result.stdout) == (code, ""), result.stderr
    assert message in result.stderr
    assert await all_rows(db) == before, "all or nothing"


async def test_restoring_a_purged_segment_is_refused(client, database_url, tmp_path):
    segment_id = await create_segment(client, "purged")
    await api(client, "DELETE", f"/api/segments/{segment_id}?purge=true")
    path = tmp_path / "restore.json"
    path.write_text(json.dumps({"segments": [{"id": int(segment_id), "status": "active"}]}))
    result = await cli(database_url, "import", str(path))
    assert result.returncode == 1 and "cannot be restored" in result.stderr


async def test_identity_hashing_round_trips_through_export_and_import(client, database_url, db, tmp_path):
    """A hashing segment exported comes back hashing: created with it, or set again on a segment that holds
    no data; one that holds data and would change is refused, and the import changes nothing."""
    response = await client.post("/v1/segments", json={"name": "hashed", "identityHashing": "sha256"},
                                 headers=AUTH)
    hashed = int((await response.json())["result"]["segmentId"])
    full = int(await create_segment(client, "full"))
    await push_ok(client, str(full), "email\na@x.com\n")
    records = await export(database_url)
    assert [(r["id"], r["identityHashing"]) for r in records] == [(hashed, "sha256"), (full, None)]
    copy = {**records[0], "id": 300, "name": "hashed copy"}  # as if imported into another gateway
    path = tmp_path / "segments.json"
    path.write_text(json.dumps({"segments": [*records, copy]}))
    await api(client, "PATCH", f"/api/segments/{hashed}", json={"identityHashing": None})

    result = await cli(database_url, "import", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"segment {hashed}: identityHashing None -> 'sha256'",
        "segment 300: created endpoint='default' name='hashed copy' description='' category='' status='active' "
        "identityHashing='sha256'",
        "changed 2 of 3 segment(s)",
    ]
    for segment_id in (hashed, 300):
        assert (await api(client, "GET", f"/api/segments/{segment_id}")).result["identityHashing"] == "sha256"
        await push_ok(client, str(segment_id), "email\nAnn@Example.com\n")
        assert await db.fetchval(f"SELECT identity FROM audience.members_{segment_id}") == \
            hashlib.sha256(b"ann@example.com").hexdigest()

    before = await all_rows(db)
    path.write_text(json.dumps({"segments": [{**records[1], "identityHashing": "sha256"}]}))
    refused = await cli(database_url, "import", str(path))
    assert refused.returncode == 1 and "cannot change while it holds data" in refused.stderr
    assert await all_rows(db) == before
