"""Audiences (``GET /api/audiences``), entity search (``GET /api/search/entities``) and membership lookup
(``GET /api/search/members``): a view over segments and definitions, ranked search whose operators are
parsed in Python (hostile text is text), a look-up that equals a scan over every members table, and
tenancy and scopes on every route."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest

from gateway.segmentation.audiences import PROBES_PER_STATEMENT
from tests.conftest import AUTH
from tests.integration.manage_helpers import api, set_status
from tests.integration.push_helpers import create_segment, csv_body, push_ok
from tests.integration.segment_job_helpers import define, endpoint_of

pytestmark = pytest.mark.pg15


async def audiences(client, query: str = "", headers: dict[str, str] = AUTH) -> dict[str, Any]:
    return (await api(client, "GET", f"/api/audiences?{query}", headers)).result


async def search(client, text: str, headers: dict[str, str] = AUTH, **params: Any) -> dict[str, Any]:
    return (await api(client, "GET", "/api/search/entities?" + urlencode({"s": text, **params}), headers)).result


async def found(client, text: str, headers: dict[str, str] = AUTH) -> list[tuple[str, str]]:
    """(type, name) of every entity a search finds, in rank order."""
    return [(entity["type"], entity["name"]) for entity in (await search(client, text, headers, limit=50))["entities"]]


async def lookup(client, identity: str, headers: dict[str, str] = AUTH) -> dict[str, Any]:
    return (await api(client, "GET", "/api/search/members?" + urlencode({"identity": identity}), headers)).result


async def named_segment(client, name: str, description: str = "", headers: dict[str, str] = AUTH) -> int:
    response = await client.post("/v1/segments", json={"name": name, "description": description}, headers=headers)
    assert response.status == 200, await response.text()
    return int((await response.json())["result"]["segmentId"])


async def test_the_audiences_view_matches_segments_and_definitions(client, db: asyncpg.Connection):
    pushed = await named_segment(client, "Newsletter subscribers", "weekly mail")
    await push_ok(client, str(pushed), csv_body(["email", "country"], [["a@x.io", "FR"], ["b@x.io", "DE"]]))
    quiet = await named_segment(client, "Quiet list")
    await set_status(client, quiet, "inactive")
    gone = await named_segment(client, "Gone list")
    await set_status(client, gone, "deleted")
    endpoint = await endpoint_of(db, pushed)
    definition, queries = await define(db, endpoint, "French buyers", 'country = "FR"', [pushed])

    answer = await audiences(client, "sort=name:asc")
    by_id = {audience["id"]: audience for audience in answer["children"]}
    rows = await db.fetch("SELECT * FROM segments WHERE endpoint_id = $1 AND status <> 'deleted'", endpoint)
    assert set(by_id) == {str(row["id"]) for row in rows}, "every segment not deleted, and only those"
    assert str(gone) not in by_id
    for row in rows:
        audience = by_id[str(row["id"])]
        assert audience["metrics"] == {"totalProfiles": row["member_count"]}
        assert audience["lifecycleState"] == {"active": "published", "inactive": "inactive"}[row["status"]]
        assert audience["namespace"] == row["type"]
        assert audience["creationTime"] == row["created_at"].isoformat(timespec="microseconds")
    assert by_id[str(pushed)] | {"creationTime": None, "updateTime": None} == {
        "id": str(pushed), "audienceId": str(pushed), "name": "Newsletter subscribers",
        "description": "weekly mail", "namespace": "Contact Lists", "type": "ExternalSegment",
        "lifecycleState": "published", "expression": None, "creationTime": None, "updateTime": None,
        "metrics": {"totalProfiles": 2}}
    assert by_id[str(queries)]["type"] == "SegmentDefinition"
    assert by_id[str(queries)]["audienceId"] == str(definition)
    assert by_id[str(queries)]["expression"] == {"type": "PQL", "format": "pql/text", "value": 'country = "FR"'}
    assert [a["name"] for a in answer["children"]] == sorted(a["name"] for a in answer["children"])
    assert answer["_page"] == {"totalCount": len(rows), "totalPages": 1, "limit": 100, "start": 0, "next": None}

    # the definition's name is the audience's: a rename shows at once (a view, not a copy)
    await db.execute("UPDATE segment_definitions SET name = 'Buyers in France', updated_at = clock_timestamp() "
                     "WHERE id = $1", definition)
    renamed = {a["id"]: a for a in (await audiences(client))["children"]}[str(queries)]
    assert renamed["name"] == "Buyers in France"
    assert renamed["updateTime"] > by_id[str(queries)]["updateTime"]


async def test_audience_filters_sort_and_pages(client, db: asyncpg.Connection):
    ids = [await named_segment(client, name, description) for name, description in
           [("Alpha", "first SEGMENT"), ("beta", "second"), ("Gamma ray", "third segment"), ("delta", "")]]
    await push_ok(client, str(ids[3]), csv_body(["id"], [["1"], ["2"], ["3"]]))
    names = lambda answer: [a["name"] for a in answer["children"]]  # noqa: E731
    assert names(await audiences(client, "name=A&sort=name")) == ["Alpha", "beta", "delta", "Gamma ray"]
    assert set(names(await audiences(client, "name=AMM"))) == {"Gamma ray"}
    assert set(names(await audiences(client, "description=segment"))) == {"Alpha", "Gamma ray"}
    assert names(await audiences(client, "sort=name")) == ["Alpha", "beta", "delta", "Gamma ray"]
    assert names(await audiences(client, "sort=name:desc")) == ["Gamma ray", "delta", "beta", "Alpha"]
    assert names(await audiences(client, "sort=totalProfiles:desc"))[0] == "delta"
    assert names(await audiences(client, "sort=creationTime")) == ["Alpha", "beta", "Gamma ray", "delta"]
    assert names(await audiences(client)) == ["delta", "Gamma ray", "beta", "Alpha"], "updateTime:desc by default"

    first = await audiences(client, "sort=name&limit=3")
    assert names(first) == ["Alpha", "beta", "delta"]
    assert first["_page"] == {"totalCount": 4, "totalPages": 2, "limit": 3, "start": 0, "next": "3"}
    second = (await api(client, "GET", first["_links"]["next"]["href"])).result
    assert names(second) == ["Gamma ray"] and second["_page"]["next"] is None
    past = await audiences(client, "start=10")
    assert past["children"] == [] and past["_page"]["totalCount"] == 4
    farthest = await audiences(client, f"start={2**63 - 1}&limit=1000")
    assert farthest["children"] == [] and farthest["_page"]["next"] is None
    assert (await audiences(client, "name=%25"))["children"] == [], "contains is literal, not a LIKE pattern"

    for bad in ("sort=nope", "sort=name:up", "start=-1", "limit=0", "limit=1001", "colour=red", "name=%00"):
        reply = await api(client, "GET", f"/api/audiences?{bad}")
        assert reply.status == 400, (bad, reply.text)


async def test_search_ranks_names_above_descriptions_and_each_operator(client, db: asyncpg.Connection):
    summer = await named_segment(client, "Summer sale", "buyers of the summer collection")
    await named_segment(client, "Winter sale", "summer leftovers")
    await named_segment(client, "Loyal customers", "bought twice in a year")
    await named_segment(client, "Newsletter", "subscribers of news@acme.example")
    endpoint = await endpoint_of(db, summer)
    definition, _ = await define(db, endpoint, "Summertime buyers", "true", None)

    ranked = await found(client, "summer")
    assert ranked[0] == ("audience", "Summer sale"), "name and description beat description alone"
    assert set(ranked) == {("audience", "Summer sale"), ("audience", "Winter sale")}
    # words: all of them
    assert await found(client, "sale winter") == [("audience", "Winter sale")]
    # prefix*: definitions too (and their Queries audience, named as they are)
    assert set(await found(client, "summ*")) == {("audience", "Summer sale"), ("audience", "Winter sale"),
                                                 ("audience", "Summertime buyers"),
                                                 ("definition", "Summertime buyers")}
    # "exact phrase": in that order, adjacent
    assert await found(client, '"twice in a year"') == [("audience", "Loyal customers")]
    assert await found(client, '"year a in twice"') == []
    # field:term
    assert await found(client, "name:summer") == [("audience", "Summer sale")]
    assert await found(client, "description:leftovers") == [("audience", "Winter sale")]
    assert await found(client, "name:leftovers") == []
    assert await found(client, 'name:"summer sale"') == [("audience", "Summer sale")]
    assert ("definition", "Summertime buyers") in await found(client, f"id:{definition}")
    assert await found(client, f"id:{summer} summer") == [("audience", "Summer sale")]
    assert await found(client, "id:abc") == []
    # a OR b
    assert set(await found(client, "loyal OR newsletter")) == {("audience", "Loyal customers"),
                                                                ("audience", "Newsletter")}
    # the default parser's email token
    assert await found(client, "news@acme.example") == [("audience", "Newsletter")]
    # paging
    page = await search(client, "sale OR loyal", limit=2, page=1)
    assert page["page"] == {"totalCount": 3, "totalPages": 2, "pageOffset": 1, "pageSize": 1}
    for bad in ({"s": "x", "limit": "51"}, {"s": "x", "page": "-1"}, {"s": ""}, {"s": "x", "q": "y"},
                {"s": " ".join(["w"] * 40)}):
        reply = await api(client, "GET", "/api/search/entities?" + urlencode(bad))
        assert reply.status == 400, (bad, reply.text)


HOSTILE = ['"', '""', '"unclosed phrase', "'", "''", "\\", "\\\\'", "a\\'b", "&", "|", "!", ":", "*", "()", "(",
           "a & b | !c", "summer:*", "*:*", "name:", "name:*", "id:", "id:-1", "id:99999999999999999999", "OR",
           "OR OR", "a OR", "OR a", "!(summer)", "summer & !winter", "'summer':*A", "summer <-> sale",
           "<->", "<2>", "name:\"", "description:'x'", "\\'\\\\'", "𝔰𝔲𝔪𝔪𝔢𝔯", "sale*** OR ***", "é*", "a:b:c",
           "summer:A", "%_", "name:\\", ")(*&^%$#@!~`", "\t\n summer \r"]


async def test_hostile_search_strings_never_fail(client):
    await named_segment(client, "Summer sale", "buyers' \"best\" & friends \\ co")
    for text in HOSTILE:
        reply = await api(client, "GET", "/api/search/entities?" + urlencode({"s": text}))
        assert reply.status in (200, 400), (text, reply.text)
        if reply.status == 400:
            assert reply.body["error"]["code"] in ("missing_s", "invalid_s"), (text, reply.text)
    # operators of tsquery are not operators here: "!buyers" is the word buyers, "&" nothing
    assert await found(client, '"summer sale" & !buyers') == [("audience", "Summer sale")]
    assert await found(client, "summer & !winter") == []


async def scan(db: asyncpg.Connection, endpoint: int, stored_as: dict[int, str]) -> dict[str, dict[str, Any]]:
    """Every segment of the endpoint holding its stored form of the identity: a scan of every members table."""
    result = {}
    for row in await db.fetch("SELECT id, attributes FROM segments WHERE endpoint_id = $1 AND status <> 'deleted' "
                              "AND to_regclass('audience.members_' || id) IS NOT NULL", endpoint):
        for member in await db.fetch(f'SELECT identity, attrs FROM audience."members_{row["id"]}"'):
            if member["identity"] == stored_as.get(row["id"]):
                result[str(row["id"])] = dict(zip(row["attributes"], member["attrs"]))
    return result


async def test_membership_lookup_equals_a_scan_over_all_segments(client, db: asyncpg.Connection):
    mail = await named_segment(client, "mail")
    await push_ok(client, str(mail), csv_body(["Email", "plan"], [["Ann@Example.com", "gold"], ["bob@x.io", "free"]]))
    ids = await named_segment(client, "ids")
    await push_ok(client, str(ids), csv_body(["customer", "tier"], [["Ann@Example.com", "2"], ["ann@example.com", "3"]]))
    other = await named_segment(client, "other")
    await push_ok(client, str(other), csv_body(["email"], [["carl@x.io"]]))
    response = await client.post("/v1/segments", json={"name": "hashed", "identityHashing": "sha256"}, headers=AUTH)
    hashed = int((await response.json())["result"]["segmentId"])
    await push_ok(client, str(hashed), csv_body(["email", "score"], [["ANN@example.com ", "9"]]))
    deleted = await named_segment(client, "deleted")
    await push_ok(client, str(deleted), csv_body(["email"], [["ann@example.com"]]))
    await set_status(client, deleted, "deleted")
    endpoint = await endpoint_of(db, mail)
    _, queries = await define(db, endpoint, "golden", 'plan = "gold"', [mail])
    await db.execute(f'CREATE TABLE audience."members_{queries}" (identity text COLLATE "C" PRIMARY KEY, attrs text[])')
    await db.execute(f'INSERT INTO audience."members_{queries}" VALUES (\'ann@example.com\', '
                     "'{ann@example.com,gold}')")
    await db.execute("UPDATE segments SET identity_attribute = 'Email', attributes = '{Email,plan}', "
                     "member_count = 1 WHERE id = $1", queries)

    answer = await lookup(client, "  Ann@Example.com ")
    digest = hashlib.sha256(b"ann@example.com").hexdigest()
    expected = await scan(db, endpoint, {mail: "ann@example.com", ids: "Ann@Example.com", hashed: digest,
                                         queries: "ann@example.com", other: "ann@example.com"})
    got = {audience["id"]: audience["attributes"] for audience in answer["audiences"]}
    assert got == expected
    assert got == {str(mail): {"Email": "ann@example.com", "plan": "gold"},
                   str(ids): {"customer": "Ann@Example.com", "tier": "2"},
                   str(hashed): {"email": digest, "score": "9"},
                   str(queries): {"Email": "ann@example.com", "plan": "gold"}}, "normalised and hashed as on push"
    assert answer["totalCount"] == 4 and answer["identity"] == "  Ann@Example.com "
    assert {a["id"]: a["type"] for a in answer["audiences"]}[str(queries)] == "SegmentDefinition"
    assert (await lookup(client, "nobody@x.io"))["audiences"] == []
    for bad in ("", "identity=", "identity=%20", "identity=a%00b", "identity=a&x=1", "identity=" + "a" * 501):
        reply = await api(client, "GET", f"/api/search/members?{bad}")
        assert reply.status == 400, (bad, reply.text)


async def test_a_lookup_over_more_segments_than_one_statement_probes(client, db: asyncpg.Connection):
    """Segments are probed PROBES_PER_STATEMENT at a time (a transaction each, to bound the locks held):
    over 2.5 times that many, the answer still equals the scan, in segment id order."""
    count = int(PROBES_PER_STATEMENT * 2.5)
    first = await named_segment(client, "seed")
    endpoint = await endpoint_of(db, first)
    held = []
    for number in range(count):
        segment = await db.fetchval("INSERT INTO segments (endpoint_id, name, identity_attribute, attributes, "
                                    "member_count) VALUES ($1, $2, 'email', '{email,n}', 1) RETURNING id",
                                    endpoint, f"bulk {number}")
        await db.execute(f'CREATE TABLE audience."members_{segment}" (identity text COLLATE "C" PRIMARY KEY, '
                         "attrs text[])")
        member = "x@y.io" if number % 3 == 0 else f"other{number}@y.io"
        await db.execute(f'INSERT INTO audience."members_{segment}" VALUES ($1, $2)', member, [member, str(number)])
        if number % 3 == 0:
            held.append(segment)
    answer = await lookup(client, "X@y.io")
    assert [int(a["id"]) for a in answer["audiences"]] == held
    assert answer["audiences"][-1]["attributes"] == {"email": "x@y.io", "n": str(count - 1 - (count - 1) % 3)}
    scanned = await scan(db, endpoint, {segment: "x@y.io" for segment in held})
    assert {a["id"]: a["attributes"] for a in answer["audiences"]} == scanned


async def test_tenancy_on_every_route(client, db: asyncpg.Connection, make_key):
    other_admin = await make_key("admin", "other")
    other_write = await make_key("write", "other")
    mine = await named_segment(client, "Shared name secret", "visible to default only")
    await push_ok(client, str(mine), csv_body(["email"], [["same@x.io"]]))
    endpoint = await endpoint_of(db, mine)
    definition, _ = await define(db, endpoint, "Shared name definition", "true", None)
    theirs = await named_segment(client, "Shared name theirs", "", headers=other_admin)
    await push_ok(client, str(theirs), csv_body(["email"], [["same@x.io"]]), headers=other_admin)

    assert [a["id"] for a in (await audiences(client, "", other_write))["children"]] == [str(theirs)]
    assert str(theirs) not in [a["id"] for a in (await audiences(client))["children"]]
    assert await found(client, "shared", other_write) == [("audience", "Shared name theirs")]
    assert await found(client, f"id:{mine} OR id:{definition} OR secret", other_write) == []
    assert ("audience", "Shared name theirs") not in await found(client, "shared")
    assert [a["id"] for a in (await lookup(client, "same@x.io", other_write))["audiences"]] == [str(theirs)]
    assert [a["id"] for a in (await lookup(client, "same@x.io"))["audiences"]] == [str(mine)]


@pytest.mark.parametrize("path", ["/api/audiences", "/api/search/entities?s=x", "/api/search/members?identity=x"])
async def test_reading_needs_a_write_key(client, make_key, path: str):
    assert (await api(client, "GET", path, await make_key("read"))).status == 403
    assert (await api(client, "GET", path, {})).status == 401
    assert (await api(client, "GET", path, await make_key("write"))).status == 200
