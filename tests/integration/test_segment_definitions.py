"""``/api/segment/definitions``: create (with its Queries audience), read, list, change, delete, validate,
bulk-get; checks of expressions, attributes, sources and ``inSegment``; the audience on ``/v1`` (listed,
pulled, push refused); scopes and tenancy. Every refused request leaves the store as it was."""

from __future__ import annotations

import dataclasses
import json
import random
import time

import pytest

from gateway.app import create_app
from tests.conftest import AUTH, GatewayTestServer
from tests.integration.definition_helpers import (BUYERS, CUSTOMERS, DEFINITIONS, counts, define, documented, pql,
                                                 source)
from tests.integration.manage_helpers import api, list_all
from tests.integration.pull_helpers import create_job, download, sync_get, wait_for_status
from tests.integration.push_helpers import push, snapshot
from tests.integration.segment_job_helpers import members, run, source_with

UNKNOWN = "987654321"


async def test_create_answers_the_definition_and_makes_its_queries_audience(client, db):
    customers = await source(client, CUSTOMERS, "customers")
    buyers = await source(client, BUYERS, "buyers")
    _, mark = await list_all(client)
    before = int(time.time() * 1000)
    created = await define(client, "US people", 'Country = "US"', [str(customers), buyers],
                           description="in the US", evaluationInfo={"batch": {"enabled": True}})
    after = int(time.time() * 1000)
    audience = created["audienceSegmentId"]
    stored = await db.fetchrow("SELECT * FROM segment_definitions WHERE id = $1", int(created["id"]))
    assert created == {
        "id": str(stored["id"]), "name": "US people", "description": "in the US",
        "expression": pql('Country = "US"'), "sources": [str(customers), str(buyers)], "mergePolicy": "firstSource",
        "evaluationInfo": {"batch": {"enabled": True}, "continuous": {"enabled": False},
                           "synchronous": {"enabled": False}},
        "audienceSegmentId": str(stored["audience_segment_id"]), "creationTime": created["creationTime"],
        "updateTime": created["updateTime"], "updateEpoch": created["updateTime"] // 1000}
    assert before <= created["creationTime"] == created["updateTime"] <= after, "epoch milliseconds"
    assert (await api(client, "GET", f"{DEFINITIONS}/{created['id']}")).result == created
    segment = (await api(client, "GET", f"/api/segments/{audience}")).result
    assert (segment["name"], segment["description"], segment["type"], segment["status"]) == \
        ("US people", "in the US", "Queries", "active")
    assert (segment["identityAttribute"], segment["attributes"], segment["memberCount"]) == \
        ("Email", ["Email", "Country", "Age"], 0), "the sources' merged attributes, first seen first"
    listed = (await api(client, "GET", "/v1/segments")).result["list"]
    assert {"id": int(audience), "name": "US people", "type": "Queries"} in listed
    details = (await api(client, "GET", f"/v1/segments/{audience}")).result
    assert [a["name"] for a in details["segmentAttributes"]] == ["Email", "Country", "Age"]
    changed, _ = await list_all(client, f"updatedSince={mark.replace('+', '%2B')}")
    assert [s["id"] for s in changed] == [int(audience)], "in the change feed"


async def test_sources_default_to_every_list_and_star_is_shown(client):
    await source(client, CUSTOMERS)
    created = (await api(client, "POST", DEFINITIONS, json={"name": "All", "expression": pql('Country = "US"')})).result
    assert created["sources"] == "*"
    assert (await define(client, "Star list", 'Country = "US"', ["*"]))["sources"] == "*"


async def test_names_are_unique_per_endpoint_in_any_case(client, db, make_key):
    await source(client, CUSTOMERS)
    first = await define(client, "Buyers", 'Country = "US"')
    stored = await counts(db)
    duplicate = await api(client, "POST", DEFINITIONS, json={"name": "BUYERS", "expression": pql('Country = "FR"')})
    duplicate.assert_failure(409, "duplicate_name")
    assert await counts(db) == stored, "no audience left behind by the refused create"
    other = await make_key("admin", endpoint="other-tenant")
    await source(client, CUSTOMERS, headers=other)
    await define(client, "buyers", 'Country = "US"', headers=other)  # another endpoint's names are its own
    second = await define(client, "Sellers", 'Country = "US"')
    rename = await api(client, "PATCH", f"{DEFINITIONS}/{second['id']}", json={"name": "buyers"})
    rename.assert_failure(409, "duplicate_name")
    assert (await api(client, "GET", f"{DEFINITIONS}/{second['id']}")).result == second
    await api(client, "DELETE", f"{DEFINITIONS}/{first['id']}")
    assert (await define(client, "buyers", 'Country = "US"'))["name"] == "buyers", "a deleted name is free"


async def test_expression_errors_answer_400_with_the_position(client, db):
    customers = await source(client, CUSTOMERS)
    stored = await counts(db)
    reply = await api(client, "POST", DEFINITIONS,
                      json={"name": "Bad", "expression": pql('Country = "US" @'), "sources": [customers]})
    reply.assert_failure(400, "invalid_expression")
    assert reply.body["error"]["position"] == 15
    for expression in ({"type": "PQL", "format": "pql/json", "value": "x"}, {"value": ""}, "Country = 'US'",
                       {"type": "SQL", "value": 'Country = "US"'}, None):
        (await api(client, "POST", DEFINITIONS, json={"name": "Bad", "expression": expression})
         ).assert_failure(400, "invalid_expression")
    assert await counts(db) == stored


async def test_an_attribute_no_source_has_is_refused_naming_it_and_the_sources(client, db):
    customers = await source(client, CUSTOMERS)
    buyers = await source(client, BUYERS)
    stored = await counts(db)
    reply = await api(client, "POST", DEFINITIONS,
                      json={"name": "Old", "expression": pql('Age = "41"'), "sources": [customers]})
    reply.assert_failure(400, "unknown_attribute")
    message = reply.body["error"]["message"]
    assert "'Age'" in message and str(customers) in message and str(buyers) not in message, message
    assert reply.body["error"]["position"] == 0
    assert await counts(db) == stored
    assert (await define(client, "Old", 'age = "41"', [customers, buyers]))["name"] == "Old", "any case"


@pytest.mark.parametrize("kind", ["missing", "another endpoint's", "deleted", "inactive", "a Queries audience",
                                  "not an id", "empty"])
async def test_sources_must_be_active_lists_of_the_endpoint(client, db, make_key, kind):
    customers = await source(client, CUSTOMERS)
    bad: object
    if kind == "missing":
        bad = [UNKNOWN]
    elif kind == "another endpoint's":
        bad = [await source(client, CUSTOMERS, headers=await make_key("admin", endpoint="other-tenant"))]
    elif kind in ("deleted", "inactive"):
        segment = await source(client, CUSTOMERS)
        await api(client, "PATCH", f"/api/segments/{segment}", json={"status": kind})
        bad = [customers, segment]
    elif kind == "a Queries audience":
        bad = [int((await define(client, "Audience", 'Country = "US"', [customers]))["audienceSegmentId"])]
    else:
        bad = ["12a"] if kind == "not an id" else []
    stored = await counts(db)
    reply = await api(client, "POST", DEFINITIONS,
                      json={"name": "Bad sources", "expression": pql('Country = "US"'), "sources": bad})
    reply.assert_failure(400, "invalid_sources")
    assert await counts(db) == stored


async def test_in_segment_names_a_segment_of_the_same_endpoint(client, db, make_key):
    customers = await source(client, CUSTOMERS)
    theirs = await source(client, CUSTOMERS, headers=await make_key("admin", endpoint="other-tenant"))
    stored = await counts(db)
    for segment in (theirs, UNKNOWN):
        reply = await api(client, "POST", DEFINITIONS, json={
            "name": "Nested", "expression": pql(f'Country = "US" and inSegment("{segment}")'), "sources": [customers]})
        reply.assert_failure(400, "unknown_segment")
        assert str(segment) in reply.body["error"]["message"]
    assert await counts(db) == stored
    other_list = await source(client, BUYERS)
    created = await define(client, "Nested", f'Country = "US" and inSegment("{other_list}")', [customers])
    assert created["expression"]["value"].endswith(f'inSegment("{other_list}")')


async def test_validate_checks_as_create_does_and_creates_nothing(client, db):
    customers = await source(client, CUSTOMERS)
    buyers = await source(client, BUYERS)
    stored = await counts(db)

    async def validate(expression: str, sources: object = "*") -> dict:
        return (await api(client, "POST", f"{DEFINITIONS}/validate",
                          json={"expression": pql(expression), "sources": sources})).result

    valid = await validate('Country = "US" and age = "41" and Country = "CA"')
    assert valid.pop("estimate")["estimatedSize"] == 0
    assert valid == {"valid": True, "errors": [], "attributes": ["Country", "age"]}
    parse = await validate('Country = "US" @')
    assert parse == {"valid": False, "attributes": [],
                     "errors": [{"code": "invalid_expression", "message": parse["errors"][0]["message"],
                                 "position": 15}]}
    unknown = await validate('Country = "US" and Age = "1"', [customers])
    assert (unknown["valid"], unknown["errors"][0]["code"], unknown["errors"][0]["position"]) == \
        (False, "unknown_attribute", 19)
    assert (await validate('Country = "US"', [UNKNOWN]))["errors"][0]["code"] == "invalid_sources"
    assert (await validate(f'inSegment("{UNKNOWN}")'))["errors"] == [{
        "code": "unknown_segment", "message": f'inSegment("{UNKNOWN}"): segment {UNKNOWN} does not exist',
        "position": None}]
    assert (await validate('Country = "US"', [buyers, customers]))["valid"]
    (await api(client, "POST", f"{DEFINITIONS}/validate", json={"sources": "*"})).assert_failure(
        400, "invalid_expression")
    assert await counts(db) == stored


async def test_validate_answers_the_estimate_exact_within_its_budget_equal_to_the_count(client, db):
    """A valid expression's answer has its estimate (gateway.segmentation.estimates): exact here, and equal
    to the members a segment job then puts in the audience; an invalid one has none."""
    rng = random.Random(16)
    rows = [[f"p{i:04d}@x.org", rng.choice(["US", "FR", "DE"]), str(rng.randint(18, 90))] for i in range(600)]
    people = await source_with(client, db, "people", ["Email", "Country", "Age"], rows)
    customers = await source(client, CUSTOMERS)
    expression = 'Country = "US" and Age >= 40'
    answer = (await api(client, "POST", f"{DEFINITIONS}/validate",
                        json={"expression": pql(expression), "sources": [people, customers]})).result
    truth = sum(1 for _, country, age in rows if country == "US" and int(age) >= 40)
    estimate = answer["estimate"]
    assert (estimate["exact"], estimate["estimatedSize"], estimate["lowerBound"], estimate["upperBound"],
            estimate["standardError"]) == (True, truth, truth, truth, 0)
    assert (estimate["totalRows"], estimate["confidenceInterval"], estimate["state"]) == (602, "95%", "RESULT_READY")
    documented(answer, "Validation")
    definition = await define(client, "Estimated", expression, [people, customers])
    await run(client, definition["id"])
    assert len(await members(db, int(definition["audienceSegmentId"]))) == truth
    invalid = (await api(client, "POST", f"{DEFINITIONS}/validate", json={"expression": pql('Country = "US" @')})).result
    assert invalid["valid"] is False and "estimate" not in invalid


async def test_validate_samples_when_the_exact_budget_is_spent(aiohttp_client, settings, db):
    client = await aiohttp_client(GatewayTestServer(create_app(
        dataclasses.replace(settings, estimate_exact_ms=0, estimate_sample_rows=500))))
    rng = random.Random(17)
    rows = [[f"p{i:05d}@x.org", rng.choice(["US", "FR", "DE", "JP"])] for i in range(5000)]
    await source_with(client, db, "people", ["Email", "Country"], rows)
    answer = (await api(client, "POST", f"{DEFINITIONS}/validate", json={"expression": pql('Country = "US"')})).result
    estimate = answer["estimate"]
    assert answer["valid"] and estimate["exact"] is False and estimate["standardError"] > 0
    assert estimate["lowerBound"] <= estimate["estimatedSize"] <= estimate["upperBound"]
    assert estimate["profilesReadSoFar"] < 5000 and estimate["totalRows"] == 5000
    documented(answer, "Validation")


async def test_patch_changes_only_the_fields_sent(client, db):
    customers = await source(client, CUSTOMERS)
    buyers = await source(client, BUYERS)
    created = await define(client, "Buyers", 'Country = "US"', [customers], description="first")
    path = f"{DEFINITIONS}/{created['id']}"
    described = (await api(client, "PATCH", path, json={"description": "second"})).result
    assert described == {**created, "description": "second", "updateTime": described["updateTime"],
                         "updateEpoch": described["updateEpoch"]}
    assert described["updateTime"] >= created["updateTime"]
    renamed = (await api(client, "PATCH", path, json={"name": "Big buyers"})).result
    assert (renamed["name"], renamed["description"], renamed["expression"]) == \
        ("Big buyers", "second", created["expression"])
    audience = (await api(client, "GET", f"/api/segments/{created['audienceSegmentId']}")).result
    assert (audience["name"], audience["description"]) == ("Big buyers", "second"), "the audience follows"
    moved = (await api(client, "PATCH", path, json={"expression": pql('Age = "41"'), "sources": [buyers]})).result
    assert (moved["expression"]["value"], moved["sources"], moved["name"]) == \
        ('Age = "41"', [str(buyers)], "Big buyers")
    before = await db.fetchrow("SELECT * FROM segment_definitions WHERE id = $1", int(created["id"]))
    for change, code in (({"sources": [customers]}, "unknown_attribute"),  # Age is only in buyers
                         ({"expression": pql("Age = ")}, "invalid_expression"),
                         ({"name": ""}, "invalid_name"), ({"audienceSegmentId": "1"}, "unknown_field"),
                         ({"evaluationInfo": {"continuous": {"enabled": True}}}, "invalid_evaluation_info")):
        (await api(client, "PATCH", path, json=change)).assert_failure(400, code)
    assert await db.fetchrow("SELECT * FROM segment_definitions WHERE id = $1", int(created["id"])) == before
    same = (await api(client, "PATCH", path, json={"name": "Big buyers"})).result
    assert same["updateTime"] == moved["updateTime"], "nothing differs: nothing written"


async def test_delete_removes_the_definition_and_soft_deletes_its_audience(client, db):
    await source(client, CUSTOMERS)
    created = await define(client, "Gone", 'Country = "US"')
    path = f"{DEFINITIONS}/{created['id']}"
    assert (await api(client, "DELETE", path)).result == created
    for method in ("GET", "PATCH", "DELETE"):
        (await api(client, method, path, json={"name": "x"} if method == "PATCH" else None)).assert_failure(
            404, "definition_not_found")
    audience = (await api(client, "GET", f"/api/segments/{created['audienceSegmentId']}")).result
    assert audience["status"] == "deleted"
    assert int(created["audienceSegmentId"]) not in [s["id"] for s in (await api(client, "GET", "/v1/segments")
                                                                       ).result["list"]]
    (await api(client, "GET", f"/v1/segments/{created['audienceSegmentId']}")).assert_failure(404)
    assert (await api(client, "GET", DEFINITIONS)).result["segments"] == []


async def test_list_pages_sorts_and_filters_by_name(client, db):
    await source(client, CUSTOMERS)
    titles = ("delta", "Alpha", "charlie", "bravo", "ALPHA 2")
    made = [await define(client, title, 'Country = "US"') for title in titles]
    first = (await api(client, "GET", f"{DEFINITIONS}?limit=2&sort=name:asc")).result
    assert [d["name"] for d in first["segments"]] == ["Alpha", "ALPHA 2"]
    assert first["page"] == {"totalCount": 5, "totalPages": 3, "sortField": "name", "sort": "name:asc",
                             "pageSize": 2, "limit": 2, "start": 0}
    names, result = [d["name"] for d in first["segments"]], first
    while result["nextCursor"] is not None:
        assert result["link"]["next"].startswith(DEFINITIONS + "?")
        result = (await api(client, "GET", result["link"]["next"])).result
        names += [d["name"] for d in result["segments"]]
    assert names == ["Alpha", "ALPHA 2", "bravo", "charlie", "delta"]
    newest = (await api(client, "GET", DEFINITIONS)).result
    assert [d["id"] for d in newest["segments"]] == [d["id"] for d in reversed(made)], "updateTime:desc by default"
    assert newest["page"]["sort"] == "updateTime:desc" and newest["link"]["next"] is None
    started = (await api(client, "GET", f"{DEFINITIONS}?start=3&limit=10&sort=creationTime:asc")).result
    assert [d["name"] for d in started["segments"]] == ["bravo", "ALPHA 2"]
    found = (await api(client, "GET", f"{DEFINITIONS}?name=alpha&sort=id:desc")).result
    assert [d["id"] for d in found["segments"]] == [made[4]["id"], made[1]["id"]] and found["page"]["totalCount"] == 2
    assert (await api(client, "GET", f"{DEFINITIONS}?name=%25")).result["segments"] == [], "% is a character"
    await api(client, "PATCH", f"{DEFINITIONS}/{made[0]['id']}", json={"description": "touched"})
    touched = (await api(client, "GET", f"{DEFINITIONS}?sort=updateTime:desc,name:asc&limit=1")).result
    assert touched["segments"][0]["id"] == made[0]["id"], "the one changed last comes first"
    for query, code in (("sort=size:asc", "invalid_sort"), ("sort=name:up", "invalid_sort"),
                        ("sort=name,name:desc", "invalid_sort"), ("start=-1", "invalid_start"),
                        ("limit=0", "invalid_limit"), ("cursor=abc", "invalid_cursor"),
                        (f"start=1&cursor={first['nextCursor']}", "invalid_start"), ("q=x", "unknown_parameter")):
        (await api(client, "GET", f"{DEFINITIONS}?{query}")).assert_failure(400, code)


async def test_bulk_get_answers_each_id(client):
    await source(client, CUSTOMERS)
    one = await define(client, "One", 'Country = "US"')
    two = await define(client, "Two", 'Country = "FR"')
    ids = [{"id": one["id"]}, {"id": int(two["id"])}, {"id": UNKNOWN}, {"id": "x"}]
    response = await client.post(f"{DEFINITIONS}/bulk-get", headers=AUTH, json={"ids": ids})
    assert response.status == 207
    results = (await response.json())["result"]["results"]
    assert results[one["id"]] == one and results[two["id"]] == two
    assert results[UNKNOWN]["error"]["code"] == results["x"]["error"]["code"] == "definition_not_found"
    for body in ({"ids": []}, {"ids": "1"}, {"ids": [1]}, {"ids": [{"id": True}]}, {}):
        (await api(client, "POST", f"{DEFINITIONS}/bulk-get", json=body)).assert_failure(400, "invalid_ids")


async def test_the_queries_audience_refuses_pushes_before_reading_the_body(client, db):
    await source(client, CUSTOMERS)
    audience = (await define(client, "Read only", 'Country = "US"'))["audienceSegmentId"]
    before = await snapshot(db, audience)
    for action in ("ADD", "REPLACE", "REMOVE"):
        # Not gzip at all: reading the body would answer 400 invalid_gzip.
        reply = await push(client, audience, b"this is not gzip", action, headers={"Content-Encoding": "gzip"})
        reply.assert_failure(409, "segment_read_only")
        (await push(client, audience, "Email\nann@x.com\n", action, total=1, number=1)).assert_failure(
            409, "segment_read_only")
    assert await snapshot(db, audience) == before
    assert await db.fetchval("SELECT count(*) FROM uploads WHERE segment_id = $1", int(audience)) == 0


async def test_a_queries_segment_exchange_creates_on_v1_takes_pushes(client, db):
    """The contract lets Exchange create a segment of type Queries; only a definition's audience is read-only."""
    reply = await api(client, "POST", "/v1/segments", json={"name": "Made by hand", "type": "Queries"})
    segment = reply.result["segmentId"]
    assert (await api(client, "GET", f"/v1/segments/{segment}")).result["type"] == "Queries"
    assert (await push(client, segment, "Email\nann@x.com\n", "REPLACE", total=1, number=1)).result["replaceCommitted"]
    assert await db.fetchval(f"SELECT count(*) FROM audience.members_{int(segment)}") == 1


async def test_an_empty_queries_audience_is_pulled_like_any_segment(client):
    await source(client, CUSTOMERS)
    audience = (await define(client, "Not run yet", 'Country = "US"'))["audienceSegmentId"]
    (await api(client, "GET", f"/v1/segments/{audience}/data")).assert_failure(501, "use_export_job")
    job = await create_job(client, audience)
    await wait_for_status(client, job, "complete")
    assert (await download(client, job)).table() == (["Email", "Country"], [])


@pytest.mark.parametrize("method, suffix, body", [
    ("GET", "/{id}", None), ("PATCH", "/{id}", {"description": "stolen"}), ("DELETE", "/{id}", None),
    ("GET", "", None), ("POST", "/bulk-get", {"ids": [{"id": "{id}"}]}),
    ("POST", "/validate", {"expression": pql('Country = "US"'), "sources": ["{source}"]}),
    ("POST", "", {"name": "Theirs", "expression": pql('Country = "US"'), "sources": ["{source}"]})])
async def test_another_endpoints_definitions_and_sources_are_like_missing_ones(client, db, make_key, method, suffix,
                                                                               body):
    customers = await source(client, CUSTOMERS)
    ours = await define(client, "Ours", 'Country = "US"', [customers])
    theirs = await make_key("admin", endpoint="other-tenant")
    stored = await counts(db)

    def fill(value: object, definition_id: str) -> object:
        return json.loads(json.dumps(value).replace("{id}", definition_id).replace("{source}", str(customers)))

    mine = await api(client, method, DEFINITIONS + suffix.replace("{id}", ours["id"]), theirs,
                     json=fill(body, ours["id"]))
    if suffix == "/{id}":
        missing = await api(client, method, DEFINITIONS + suffix.replace("{id}", UNKNOWN), theirs,
                            json=fill(body, UNKNOWN))
        mine.assert_failure(404, "definition_not_found")
        assert (missing.status, missing.body["error"]["code"]) == (404, "definition_not_found")
    elif suffix == "":
        if method == "GET":
            assert mine.result["segments"] == [] and mine.result["page"]["totalCount"] == 0
        else:
            mine.assert_failure(400, "invalid_sources")
    elif suffix == "/bulk-get":
        assert mine.body["result"]["results"][ours["id"]]["error"]["code"] == "definition_not_found"
    else:
        assert mine.result["errors"][0]["code"] == "invalid_sources"
    assert await counts(db) == stored
    assert (await api(client, "GET", f"{DEFINITIONS}/{ours['id']}")).result == ours


async def test_reading_needs_write_scope_and_changing_needs_admin(client, make_key):
    await source(client, CUSTOMERS)
    made = await define(client, "Scoped", 'Country = "US"')
    path = f"{DEFINITIONS}/{made['id']}"
    body = {"name": "Other", "expression": pql('Country = "US"')}
    calls = [("GET", DEFINITIONS, None, "write"), ("GET", path, None, "write"),
             ("POST", f"{DEFINITIONS}/validate", {"expression": pql('Country = "US"')}, "write"),
             ("POST", f"{DEFINITIONS}/bulk-get", {"ids": [{"id": made["id"]}]}, "write"),
             ("POST", DEFINITIONS, body, "admin"), ("PATCH", path, {"description": "x"}, "admin"),
             ("DELETE", path, None, "admin")]
    for scope in ("read", "write"):
        headers = await make_key(scope)
        for method, route, payload, needed in calls:
            reply = await api(client, method, route, headers, json=payload)
            if (scope, needed) == ("write", "write"):
                assert reply.status in (200, 207), (method, route, reply.text)
            else:
                reply.assert_failure(403, "insufficient_scope")
    assert (await api(client, "GET", path)).result == made
    (await api(client, "GET", DEFINITIONS, {})).assert_failure(401)


async def test_a_definition_made_here_is_evaluated_by_a_job_and_pulled(client, db):
    """End to end: the audience created with the definition has the columns a segment job fills, the
    first source wins, and the result is pulled like any segment (direct GET and export job)."""
    customers = await source(client, CUSTOMERS, "customers")
    buyers = await source(client, BUYERS, "buyers")
    created = await define(client, "US people", 'Country = "US"', [customers, buyers])
    await run(client, created["id"])
    audience = created["audienceSegmentId"]
    expected = (["Email", "Country", "Age"], [["ann@x.com", "US", "41"], ["cid@x.com", "US", "30"]])
    header, rows = (await sync_get(client, audience)).table()
    assert (header, sorted(rows)) == expected, "ann: US from customers (first source), her Age from buyers"
    job = await create_job(client, audience)
    await wait_for_status(client, job, "complete")
    header, rows = (await download(client, job)).table()
    assert (header, sorted(rows)) == expected
