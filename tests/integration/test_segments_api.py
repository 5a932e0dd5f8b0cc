import asyncio

import pytest

from tests.conftest import AUTH

pytestmark = pytest.mark.pg15


async def create(client, body, headers=AUTH):
    response = await client.post("/v1/segments", json=body, headers=headers)
    return response.status, await response.json()


async def test_create_list_and_get(client):
    status, body = await create(client, {"name": "OptInThisWeek", "description": "New subscriptions",
                                         "category": "consent"})
    assert status == 200
    assert body["responseStatus"] == "success"
    segment_id = body["result"]["segmentId"]
    assert isinstance(segment_id, str) and segment_id.isdigit()

    await create(client, {"name": "Warehouse", "type": "Databases"})
    listing = await (await client.get("/v1/segments", headers=AUTH)).json()
    assert listing == {"responseStatus": "success", "result": {"totalCount": 2, "list": [
        {"id": int(segment_id), "name": "OptInThisWeek", "type": "Contact Lists"},
        {"id": int(segment_id) + 1, "name": "Warehouse", "type": "Databases"},
    ]}}

    response = await client.get(f"/v1/segments/{segment_id}", headers=AUTH)
    assert response.status == 200
    result = (await response.json())["result"]
    assert result["id"] == int(segment_id)
    assert result["name"] == "OptInThisWeek"
    assert result["segmentAttributes"] == []
    assert result["description"] == "New subscriptions"
    assert result["category"] == "consent"
    assert result["type"] == "Contact Lists"


async def test_same_name_twice_makes_two_segments(client):
    first = (await create(client, {"name": "Twins"}))[1]["result"]["segmentId"]
    second = (await create(client, {"name": "Twins"}))[1]["result"]["segmentId"]
    assert first != second


@pytest.mark.parametrize("body, code", [
    ({}, "invalid_name"),
    ({"name": ""}, "invalid_name"),
    ({"name": "   "}, "invalid_name"),
    ({"name": 5}, "invalid_field"),
    ({"name": "x", "description": ["no"]}, "invalid_field"),
    ({"name": "x", "type": "Spreadsheets"}, "invalid_type"),
])
async def test_create_rejects_bad_bodies(client, body, code):
    status, payload = await create(client, body)
    assert status == 400
    assert payload["responseStatus"] == "failure"
    assert payload["error"]["code"] == code
    assert payload["error"]["message"]


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b""])
async def test_create_rejects_non_object_json(client, raw):
    response = await client.post("/v1/segments", data=raw, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_json"


async def test_idempotency_key_returns_first_answer(client):
    headers = {**AUTH, "Idempotency-Key": "share-42"}
    first = await create(client, {"name": "Once"}, headers)
    again = await create(client, {"name": "Once"}, headers)
    assert first == again
    listing = await (await client.get("/v1/segments", headers=AUTH)).json()
    assert listing["result"]["totalCount"] == 1


async def test_idempotency_key_concurrent_requests_create_one(client):
    headers = {**AUTH, "Idempotency-Key": "race"}
    results = await asyncio.gather(*(create(client, {"name": "Race"}, headers) for _ in range(8)))
    assert len({result[1]["result"]["segmentId"] for result in results}) == 1
    listing = await (await client.get("/v1/segments", headers=AUTH)).json()
    assert listing["result"]["totalCount"] == 1


async def test_idempotency_key_with_other_body_conflicts(client):
    headers = {**AUTH, "Idempotency-Key": "k1"}
    await create(client, {"name": "A"}, headers)
    status, body = await create(client, {"name": "B"}, headers)
    assert status == 409
    assert body["error"]["code"] == "idempotency_key_reused"


async def test_idempotency_key_expires_after_a_day(client, db):
    headers = {**AUTH, "Idempotency-Key": "old"}
    first = (await create(client, {"name": "A"}, headers))[1]["result"]["segmentId"]
    await db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    second = (await create(client, {"name": "A"}, headers))[1]["result"]["segmentId"]
    assert first != second


@pytest.mark.parametrize("segment_id", ["999999", "abc", "0", "-1", "99999999999999999999", "1.5", "١"])
async def test_unknown_or_malformed_segment_id_is_404(client, segment_id):
    response = await client.get(f"/v1/segments/{segment_id}", headers=AUTH)
    assert response.status == 404
    body = await response.json()
    assert body["responseStatus"] == "failure"
    assert body["error"]["code"] == "segment_not_found"


async def test_another_endpoints_segment_looks_missing(client, make_key):
    other = await make_key("admin", endpoint="other-tenant")
    segment_id = (await create(client, {"name": "Mine"}))[1]["result"]["segmentId"]
    theirs = await client.get(f"/v1/segments/{segment_id}", headers=other)
    missing = await client.get("/v1/segments/987654", headers=other)
    assert theirs.status == missing.status == 404
    assert (await theirs.json())["error"]["code"] == (await missing.json())["error"]["code"]
    listing = await (await client.get("/v1/segments", headers=other)).json()
    assert listing["result"] == {"totalCount": 0, "list": []}


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_token"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_token"),
    ({"Authorization": "Bearer "}, "missing_token"),
    ({"Authorization": "Bearer not-a-key"}, "invalid_token"),
])
async def test_missing_or_unknown_key_is_401(client, headers, code):
    response = await client.get("/v1/segments", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="audience-gateway"')
    body = await response.json()
    assert body["error"]["code"] == code
    assert "not-a-key" not in await response.text()


async def test_revoked_and_expired_keys_are_401(client, make_key, db):
    revoked = await make_key("admin")
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE label = '' AND scope = 'admin'")
    expired = await make_key("read", expires_at=__import__("datetime").datetime(2020, 1, 1,
                             tzinfo=__import__("datetime").timezone.utc))
    for headers in (revoked, expired):
        response = await client.get("/v1/segments", headers=headers)
        assert response.status == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_read_key_can_read_but_not_write(client, make_key):
    reader = await make_key("read")
    assert (await client.get("/v1/segments", headers=reader)).status == 200
    status, body = await create(client, {"name": "Nope"}, reader)
    assert status == 403
    assert body["error"]["code"] == "insufficient_scope"
    writer = await make_key("write")
    assert (await create(client, {"name": "Yes"}, writer))[0] == 200
