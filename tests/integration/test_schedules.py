"""``/api/config/schedules`` and the sweep that runs them: CRUD, cron forms, one job per due time across
concurrent claimers, one catch-up run after an outage, changes effective at once, inactive never runs,
scopes and tenancy."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from gateway.segmentation.schedules import run_due
from tests.conftest import AUTH
from tests.helpers import eventually
from tests.integration.definition_helpers import CUSTOMERS, SCHEDULES, define, documented, source
from tests.integration.manage_helpers import api
from tests.integration.segment_job_helpers import members, wait_for

UNKNOWN = "987654321"
MINUTE = dt.timedelta(minutes=1)


async def schedule(client, cron: str = "0 0 1 * * ?", state: str = "active", segments: object = ("*",),
                   name: str = "nightly", **options) -> dict:
    body = {"name": name, "type": "batch_segmentation", "properties": {"segments": list(segments)},
            "schedule": cron, "state": state}
    return (await api(client, "POST", SCHEDULES, json=body, **options)).result


async def stored(db: asyncpg.Connection, schedule_id: str) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM schedules WHERE id = $1", int(schedule_id))


async def jobs_of(db: asyncpg.Connection, schedule_id: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT j.id, j.kind, j.endpoint_id, s.* FROM jobs j "
                          "JOIN segment_jobs s ON s.job_id = j.id WHERE s.schedule_id = $1 ORDER BY j.id",
                          int(schedule_id))


async def make_due(db: asyncpg.Connection, schedule_id: str, ago: dt.timedelta = dt.timedelta(seconds=1)) -> None:
    """Set the due time in the past (as a process that was down would find it)."""
    await db.execute("UPDATE schedules SET next_run_at = now() - $2::interval WHERE id = $1", int(schedule_id), ago)


async def test_create_shows_the_schedule_with_its_next_run(client, db):
    await source(client, CUSTOMERS)
    definition = await define(client, "US", 'Country = "US"')
    created = await schedule(client, "0 0 1 * * ?", segments=[definition["id"]])
    row = await stored(db, created["id"])
    assert created == {
        "id": str(row["id"]), "name": "nightly", "type": "batch_segmentation",
        "properties": {"segments": [definition["id"]]}, "schedule": "0 0 1 * * ?", "state": "active",
        "nextRunTime": int(row["next_run_at"].timestamp() * 1000), "lastJobId": None,
        "createEpoch": int(row["created_at"].timestamp()), "updateEpoch": int(row["updated_at"].timestamp()),
        "creationTime": int(row["created_at"].timestamp() * 1000),
        "updateTime": int(row["updated_at"].timestamp() * 1000)}
    next_at = row["next_run_at"].astimezone(dt.UTC)
    assert (next_at.hour, next_at.minute, next_at.second) == (1, 0, 0), "UTC"
    assert row["created_at"] < row["next_run_at"] <= row["created_at"] + dt.timedelta(days=1)
    assert (await api(client, "GET", f"{SCHEDULES}/{created['id']}")).result == created
    idle = await schedule(client, state="inactive", name="idle")
    assert idle["nextRunTime"] is None and (await stored(db, idle["id"]))["next_run_at"] is None
    default = (await api(client, "POST", SCHEDULES, json={"name": "d", "properties": {"segments": ["*"]},
                                                          "schedule": "*/5 * * * *"})).result
    assert (default["state"], default["type"], default["nextRunTime"]) == ("inactive", "batch_segmentation", None)


@pytest.mark.parametrize("cron, minute, second", [
    ("*/5 * * * *", None, 0), ("7 * * * *", 7, 0), ("30 7 * * * ?", 7, 30), ("0 7 * ? * * *", 7, 0),
    ("0 7 * * * ? 2020-2099", 7, 0), ("15  7  *  *  *", 15, 0)])
async def test_five_six_and_seven_field_forms(client, db, cron, minute, second):
    created = await schedule(client, cron)
    next_at = (await stored(db, created["id"]))["next_run_at"].astimezone(dt.UTC)
    assert next_at.second == second and (minute is None and next_at.minute % 5 == 0 or next_at.minute == minute)
    assert created["schedule"] == " ".join(cron.split())


@pytest.mark.parametrize("cron", ["", "* * * *", "0 0 1 * * ? 2020 x", "61 * * * *", "*/10 * * * * ?",
                                  "0 0 1 * * ? 1999", "0 0 0 31 2 ?", "every day", "0 25 * * *", 5])
async def test_a_bad_cron_is_refused(client, db, cron):
    reply = await api(client, "POST", SCHEDULES, json={"name": "bad", "properties": {"segments": ["*"]},
                                                       "schedule": cron, "state": "active"})
    reply.assert_failure(400, "invalid_schedule")
    assert await db.fetchval("SELECT count(*) FROM schedules") == 0


async def validate(client, cron: object, headers: dict[str, str] = AUTH, **fields) -> dict:
    return (await api(client, "POST", f"{SCHEDULES}/validate", headers, json={"schedule": cron, **fields})).result


def utc(epoch_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)


@pytest.mark.parametrize("cron, step, at", [
    ("*/5 * * * *", dt.timedelta(minutes=5), lambda t: t.minute % 5 == 0 and t.second == 0),
    ("30 7 * * *", dt.timedelta(days=1), lambda t: (t.hour, t.minute, t.second) == (7, 30, 0)),
    ("0 0 1 * * ?", dt.timedelta(days=1), lambda t: (t.hour, t.minute, t.second) == (1, 0, 0)),
    ("15 0 1 * * ?", dt.timedelta(days=1), lambda t: (t.hour, t.minute, t.second) == (1, 0, 15)),
    ("0 0 12 ? * SUN *", dt.timedelta(weeks=1), lambda t: (t.weekday(), t.hour, t.minute) == (6, 12, 0)),
    ("0 0 1 * * ? 2030-2099", dt.timedelta(days=1), lambda t: (t.year, t.hour) == (2030, 1))])
async def test_validate_shows_the_next_runs_of_each_form(client, db, cron, step, at):
    """5 fields, Quartz's 6 and 7: the first runs strictly after the database's now, evenly spaced, each a
    time of the cron; the first is the nextRunTime a schedule created with it gets."""
    before = await db.fetchval("SELECT now()")
    answer = await validate(client, cron)
    assert (answer["valid"], answer["errors"], len(answer["nextRunTimes"])) == (True, [], 5), "5 by default"
    documented(answer, "ScheduleValidation")
    times = [utc(ms) for ms in answer["nextRunTimes"]]
    assert all(at(t) for t in times), times
    assert [b - a for a, b in zip(times, times[1:])] == [step] * 4
    assert before < times[0] and (times[0] <= before + step or cron.endswith("2030-2099"))
    created = await schedule(client, cron)
    if created["nextRunTime"] != answer["nextRunTimes"][0]:  # a time passed between the two calls
        assert created["nextRunTime"] == answer["nextRunTimes"][1], (created, answer)
    assert len((await validate(client, cron, count=12))["nextRunTimes"]) == 12


async def test_validate_answers_fewer_runs_when_the_cron_has_fewer(client):
    answer = await validate(client, "0 0 12 1 1 ? 2030-2032", count=5)
    assert [utc(ms) for ms in answer["nextRunTimes"]] == [dt.datetime(year, 1, 1, 12, tzinfo=dt.UTC)
                                                          for year in (2030, 2031, 2032)]


@pytest.mark.parametrize("cron", ["", "* * * *", "0 0 1 * * ? 2020 x", "61 * * * *", "*/10 * * * * ?",
                                  "0 0 1 * * ? 1999", "0 0 0 31 2 ?", "every day", "0 25 * * *"])
async def test_validate_shows_why_a_cron_is_refused(client, db, cron):
    """The error a create would answer, as a result (not a 400): a form shows it as the user types."""
    answer = await validate(client, cron)
    refused = await api(client, "POST", SCHEDULES, json={"name": "bad", "properties": {"segments": ["*"]},
                                                         "schedule": cron})
    refused.assert_failure(400, "invalid_schedule")
    assert answer == {"valid": False, "nextRunTimes": [],
                      "errors": [{"code": "invalid_schedule", "message": refused.body["error"]["message"]}]}
    documented(answer, "ScheduleValidation")
    assert await db.fetchval("SELECT count(*) FROM schedules") == 0


async def test_validate_refuses_a_malformed_request(client, db):
    for body, code in (({}, "invalid_schedule"), ({"schedule": 5}, "invalid_schedule"),
                       ({"schedule": None}, "invalid_schedule"), ({"schedule": ["* * * * *"]}, "invalid_schedule"),
                       ({"schedule": "* * * * *", "count": 0}, "invalid_count"),
                       ({"schedule": "* * * * *", "count": 51}, "invalid_count"),
                       ({"schedule": "* * * * *", "count": "5"}, "invalid_count"),
                       ({"schedule": "* * * * *", "count": True}, "invalid_count"),
                       ({"schedule": "* * * * *", "count": 2.0}, "invalid_count"),
                       ({"schedule": "* * * * *", "name": "x"}, "unknown_field")):
        (await api(client, "POST", f"{SCHEDULES}/validate", json=body)).assert_failure(400, code)
    (await api(client, "POST", f"{SCHEDULES}/validate?count=3", json={"schedule": "* * * * *"})).assert_failure(400)
    assert await db.fetchval("SELECT count(*) FROM schedules") == 0


async def test_validate_reads_nothing_of_an_endpoint(client, make_key):
    """Tenancy does not apply: any endpoint's key gets the same answer (it reads no stored data)."""
    theirs = await make_key("write", endpoint="other-tenant")
    ours = await validate(client, "0 0 1 1 *", count=3)
    assert await validate(client, "0 0 1 1 *", theirs, count=3) == ours and ours["valid"]


async def test_other_bad_bodies(client, db, make_key):
    theirs = await make_key("admin", endpoint="other-tenant")
    await source(client, CUSTOMERS, headers=theirs)
    their_definition = await define(client, "Theirs", 'Country = "US"', headers=theirs)
    good = {"name": "n", "properties": {"segments": ["*"]}, "schedule": "0 1 * * *"}
    for change, code in (({"type": "other"}, "invalid_type"), ({"state": "on"}, "invalid_state"),
                         ({"name": " "}, "invalid_name"), ({"properties": {"segments": []}}, "invalid_properties"),
                         ({"properties": {"segments": [UNKNOWN]}}, "invalid_properties"),
                         ({"properties": {"segments": [their_definition["id"]]}}, "invalid_properties"),
                         ({"properties": {"segments": ["*"], "x": 1}}, "invalid_properties"),
                         ({"extra": 1}, "unknown_field")):
        (await api(client, "POST", SCHEDULES, json={**good, **change})).assert_failure(400, code)
    for missing in ("name", "properties", "schedule"):
        body = {key: value for key, value in good.items() if key != missing}
        (await api(client, "POST", SCHEDULES, json=body)).assert_failure(400)
    assert await db.fetchval("SELECT count(*) FROM schedules") == 0


async def test_a_due_schedule_makes_one_job_across_concurrent_claimers(client, db, database_url):
    """Two processes' sweeps (two pools) race over many due schedules, round after round: each due time
    makes exactly one job, whichever process claims it."""
    await source(client, CUSTOMERS)
    definition = await define(client, "US", 'Country = "US"')
    # yearly: only make_due makes them due while the test runs
    made = [await schedule(client, "0 0 1 1 *", name=f"s{i}", segments=["*"] if i % 2 else [definition["id"]])
            for i in range(12)]
    pools = [await asyncpg.create_pool(database_url, min_size=2, max_size=2) for _ in range(2)]
    try:
        for round_number in range(1, 4):
            for created in made:
                await make_due(db, created["id"])
            ran = await asyncio.gather(*(run_due(pool) for pool in pools for _ in range(2)))
            # the app's own sweep may take some too: count the jobs, not the answers
            await eventually(lambda: _all_ran(db, made, round_number), "every due schedule to run")
            assert sum(ran) <= len(made)
            for created in made:
                assert len(await jobs_of(db, created["id"])) == round_number, created["name"]
    finally:
        for pool in pools:
            await pool.close()
    ours = await db.fetchval("SELECT id FROM endpoints WHERE name = 'default'")
    for number, created in enumerate(made):
        jobs = await jobs_of(db, created["id"])
        row = await stored(db, created["id"])
        assert row["last_job_id"] == jobs[-1]["id"]
        assert {(job["kind"], job["source"], job["endpoint_id"]) for job in jobs} == {("SegmentJob", "scheduler", ours)}
        if number % 2:
            assert {(job["all_definitions"], tuple(job["definition_ids"])) for job in jobs} == {(True, ())}
        else:
            assert {(job["all_definitions"], tuple(job["definition_ids"])) for job in jobs} == \
                {(False, (int(definition["id"]),))}
    shown = (await api(client, "GET", f"{SCHEDULES}/{made[0]['id']}")).result
    assert shown["lastJobId"] == str((await jobs_of(db, made[0]["id"]))[-1]["id"])


async def _all_ran(db: asyncpg.Connection, made: list[dict], count: int) -> bool:
    for created in made:
        if len(await jobs_of(db, created["id"])) < count:
            return False
    return True


async def test_a_long_outage_gives_one_catch_up_run(client, db):
    created = await schedule(client, "0 * * * *")  # hourly: three days missed 72 times
    await make_due(db, created["id"], dt.timedelta(days=3))
    await eventually(lambda: jobs_of(db, created["id"]), "the catch-up run (the app's sweep)")
    await run_due_until_idle(db)
    row = await stored(db, created["id"])
    now = await db.fetchval("SELECT now()")
    assert len(await jobs_of(db, created["id"])) == 1
    assert now < row["next_run_at"] <= now + 60 * MINUTE, "the next due time is the first one after now"


async def run_due_until_idle(db: asyncpg.Connection) -> None:
    """Nothing is due any more (another sweep has nothing to do)."""
    async def idle() -> bool:
        return await db.fetchval("SELECT count(*) FROM schedules WHERE state = 'active' AND next_run_at <= now()") == 0
    await eventually(idle, "no schedule to be due")


async def test_inactive_never_runs(client, db, database_url):
    created = await schedule(client, "* * * * *", state="inactive")
    await make_due(db, created["id"], dt.timedelta(hours=1))  # even with a due time left in the row
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        assert await run_due(pool) == 0
    finally:
        await pool.close()
    assert await jobs_of(db, created["id"]) == []


async def test_patch_takes_effect_at_once(client, db):
    created = await schedule(client, "0 0 1 1 *", name="yearly")  # next 1 January
    path = f"{SCHEDULES}/{created['id']}"
    before = await stored(db, created["id"])
    renamed = (await api(client, "PATCH", path, json={"name": "renamed"})).result
    assert (renamed["name"], renamed["nextRunTime"]) == ("renamed", created["nextRunTime"]), "only what was sent"
    every_minute = (await api(client, "PATCH", path, json={"schedule": "0 * * * * ?"})).result
    row = await stored(db, created["id"])
    now = await db.fetchval("SELECT now()")
    assert row["next_run_at"] < before["next_run_at"] and now < row["next_run_at"] <= now + MINUTE
    assert every_minute["nextRunTime"] == int(row["next_run_at"].timestamp() * 1000)
    off = (await api(client, "PATCH", path, json={"state": "inactive"})).result
    assert off["nextRunTime"] is None and (await stored(db, created["id"]))["next_run_at"] is None
    on = (await api(client, "PATCH", path, json={"state": "active"})).result
    assert on["nextRunTime"] is not None and on["schedule"] == "0 * * * * ?" and on["name"] == "renamed"
    kept = await stored(db, created["id"])
    for change, code in (({"schedule": "bad"}, "invalid_schedule"), ({"state": "paused"}, "invalid_state"),
                         ({"type": "batch_segmentation"}, "unknown_field"),
                         ({"properties": {"segments": [UNKNOWN]}}, "invalid_properties")):
        (await api(client, "PATCH", path, json=change)).assert_failure(400, code)
    assert await stored(db, created["id"]) == kept


async def test_list_and_delete(client, db):
    made = [await schedule(client, name=f"s{i}") for i in range(3)]
    first = (await api(client, "GET", f"{SCHEDULES}?limit=2")).result
    assert [s["id"] for s in first["children"]] == [made[0]["id"], made[1]["id"]]
    assert first["_page"] == {"totalCount": 3, "pageSize": 2, "limit": 2, "start": 0}
    rest = (await api(client, "GET", first["_links"]["next"])).result
    assert [s["id"] for s in rest["children"]] == [made[2]["id"]] and rest["nextCursor"] is None
    assert [s["id"] for s in (await api(client, "GET", f"{SCHEDULES}?start=1")).result["children"]] == \
        [made[1]["id"], made[2]["id"]]
    path = f"{SCHEDULES}/{made[1]['id']}"
    assert (await api(client, "DELETE", path)).result["id"] == made[1]["id"]
    for method in ("GET", "PATCH", "DELETE"):
        (await api(client, method, path, json={"name": "x"} if method == "PATCH" else None)).assert_failure(
            404, "schedule_not_found")
    assert await db.fetchval("SELECT count(*) FROM schedules") == 2


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE", "LIST"])
async def test_another_endpoints_schedule_is_like_a_missing_one(client, db, make_key, method):
    ours = await schedule(client)
    theirs = await make_key("admin", endpoint="other-tenant")
    before = await stored(db, ours["id"])
    if method == "LIST":
        listed = (await api(client, "GET", SCHEDULES, theirs)).result
        assert listed["children"] == [] and listed["_page"]["totalCount"] == 0
    else:
        body = {"state": "inactive"} if method == "PATCH" else None
        mine = await api(client, method, f"{SCHEDULES}/{ours['id']}", theirs, json=body)
        missing = await api(client, method, f"{SCHEDULES}/{UNKNOWN}", theirs, json=body)
        mine.assert_failure(404, "schedule_not_found")
        assert (missing.status, missing.body["error"]["code"]) == (404, "schedule_not_found")
    assert await stored(db, ours["id"]) == before


async def test_reading_needs_write_scope_and_changing_needs_admin(client, db, make_key):
    made = await schedule(client)
    path = f"{SCHEDULES}/{made['id']}"
    body = {"name": "x", "properties": {"segments": ["*"]}, "schedule": "0 1 * * *"}
    calls = [("GET", SCHEDULES, None, "write"), ("GET", path, None, "write"),
             ("POST", f"{SCHEDULES}/validate", {"schedule": "0 1 * * *"}, "write"), ("POST", SCHEDULES, body, "admin"),
             ("PATCH", path, {"name": "y"}, "admin"), ("DELETE", path, None, "admin")]
    for scope in ("read", "write"):
        headers = await make_key(scope)
        for method, route, payload, needed in calls:
            reply = await api(client, method, route, headers, json=payload)
            if (scope, needed) == ("write", "write"):
                assert reply.status == 200, (method, route, reply.text)
            else:
                reply.assert_failure(403, "insufficient_scope")
    assert (await api(client, "GET", path)).result == made


async def test_a_scheduled_job_runs_its_definitions(client, db):
    """End to end through the app's own sweep and job workers: the job a due schedule makes is a segment
    job of its definitions, shown with its source and schedule, and fills the audience."""
    await source(client, CUSTOMERS)
    definition = await define(client, "US", 'Country = "US"')
    created = await schedule(client, "0 0 1 1 *", segments=[definition["id"]])
    await make_due(db, created["id"])

    async def last_job() -> str | None:
        return (await api(client, "GET", f"{SCHEDULES}/{created['id']}")).result["lastJobId"]

    job_id = await eventually(last_job, "the schedule to run")
    job = await wait_for(client, job_id, "SUCCEEDED")
    assert (job["source"], job["segments"], job["properties"]) == \
        ("scheduler", [{"segmentId": definition["id"]}], {"scheduleId": created["id"]})
    assert set(await members(db, int(definition["audienceSegmentId"]))) == {"ann@x.com"}
