"""Every /v1 route × every kind of caller: the authentication and isolation outcome of each.

The routes come from the app's router, so a new route is covered as soon as it is registered (a new path
parameter needs a value in ``path_ids`` below, and the test says so). What is checked is the auth outcome:
401 for bad keys, 403 for a key without the scope, 404 exactly like a missing resource for another
endpoint's, and the route's normal answer otherwise.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from gateway.app import create_app
from gateway.auth.keys import revoke_key
from gateway.settings import Settings
from tests.conftest import AUTH

ROUTES = sorted({(route.method, route.resource.canonical)
                 for route in create_app(Settings.load(environ={})).router.routes()
                 if route.resource is not None and route.resource.canonical.startswith("/v1")})
BAD_KEYS = ("no key", "wrong key", "revoked", "expired")
OWNER_KEYS = ("read", "write", "admin")
MISSING_OFFSET = 10**9  # ids that do not exist, equal where the real ones are equal
CSV = b"Email,FirstName\nann@example.com,Ann\n"


def required_scope(method: str, path: str) -> str:
    if path.startswith("/v1/admin"):
        return "admin"
    return "read" if method in ("GET", "HEAD") else "write"


def request_body(method: str, path: str, ids: dict[str, int]) -> dict:
    """What the route needs to get past its own validation (none: the route's answer without a body)."""
    if (method, path) == ("POST", "/v1/segments"):
        return {"json": {"name": "made by the scope matrix"}}
    if (method, path) == ("POST", "/v1/jobs"):
        return {"json": {"segmentId": ids["segment_id"], "jobType": "ExportSegmentData"}}
    if path.endswith("/data") and method in ("POST", "PUT", "DELETE"):
        return {"data": CSV, "headers": {"Content-Type": "text/csv"}}
    return {}


def references_resource(method: str, path: str) -> bool:
    return "{" in path or (method, path) == ("POST", "/v1/jobs")


async def make_resources(client, path: str, marker: str) -> dict[str, int]:
    """A fresh segment with one member (and an export job when the route needs one), owned by `default`."""
    response = await client.post("/v1/segments", json={"name": marker}, headers=AUTH)
    segment_id = int((await response.json())["result"]["segmentId"])
    response = await client.post(f"/v1/segments/{segment_id}/data", data=CSV,
                                 headers={**AUTH, "Content-Type": "text/csv"})
    assert response.status == 200, await response.text()
    ids = {"segment_id": segment_id}
    if "{job_id}" in path or "{data_id}" in path:
        response = await client.post("/v1/jobs", json={"segmentId": segment_id, "jobType": "ExportSegmentData"},
                                     headers=AUTH)
        result = (await response.json())["result"]
        ids.update(job_id=result["jobId"], data_id=result["jobDataId"])
    return ids


def path_ids(path: str, ids: dict[str, int]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        assert name in ids, f"the scope matrix has no value for the path parameter {{{name}}}: add it"
        return str(ids[name])

    return re.sub(r"\{(\w+)\}", value, path)


def masked(text: str, ids: dict[str, int]) -> str:
    for name, value in ids.items():
        text = re.sub(rf"(?<!\d){value}(?!\d)", f"<{name}>", text)
    return text


@pytest.fixture
async def callers(make_key, db) -> dict[str, dict[str, str]]:
    keys = {"no key": {}, "wrong key": {"Authorization": f"Bearer agw_{uuid.uuid4().hex}{uuid.uuid4().hex}"}}
    keys["revoked"] = await make_key("admin")
    await revoke_key(db, await db.fetchval("SELECT max(id) FROM api_keys"))
    keys["expired"] = await make_key("admin", expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    for scope in OWNER_KEYS:
        keys[scope] = await make_key(scope)
    keys["other tenant"] = await make_key("admin", endpoint="other-tenant")
    return keys


def test_the_matrix_sees_the_routes():
    paths = {path for _, path in ROUTES}
    assert {"/v1/segments", "/v1/segments/{segment_id}", "/v1/segments/{segment_id}/data"} <= paths


# Known bugs outside authentication, each to be removed with its fix (strict: a fixed one fails here).
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("method, path", [
    pytest.param(method, path, id=f"{method} {path}",
                 marks=[pytest.mark.xfail(reason=KNOWN_BUGS[method, path], strict=True)]
                 if (method, path) in KNOWN_BUGS else [])
    for method, path in ROUTES])
async def test_auth_outcome_of_every_caller(client, callers, method, path):
    problems: list[str] = []

    async def call(caller: str, ids: dict[str, int]):
        response = await client.request(method, path_ids(path, ids), headers={
            **callers[caller], **request_body(method, path, ids).get("headers", {})},
            **{k: v for k, v in request_body(method, path, ids).items() if k != "headers"})
        return response.status, await response.text(), response.headers

    for caller in (*BAD_KEYS, "other tenant", *OWNER_KEYS):
        marker = f"matrix-{uuid.uuid4().hex}"
        ids = await make_resources(client, path, marker)
        status, text, headers = await call(caller, ids)
        cell = f"{method} {path} as {caller}: {status} {text[:200]}"

        if caller in BAD_KEYS:
            challenge = headers.get("WWW-Authenticate", "")
            if status != 401 or not challenge.startswith('Bearer realm="audience-gateway"'):
                problems.append(f"{cell} (expected 401 with the Bearer challenge)")
            elif (caller != "no key") != ('error="invalid_token"' in challenge):
                problems.append(f"{cell} (error=\"invalid_token\" only when a key was sent: {challenge})")
            token = callers[caller].get("Authorization", "Bearer -").split()[1]
            if caller != "no key" and token in text:
                problems.append(f"{cell} (the body repeats the key)")
        elif caller == "other tenant":
            if references_resource(method, path):
                missing = {name: value + MISSING_OFFSET for name, value in ids.items()}
                missing_status, missing_text, _ = await call(caller, missing)
                if (status, masked(text, ids)) != (404, masked(missing_text, missing)) or missing_status != 404:
                    problems.append(f"{cell} (expected exactly the answer for a missing one: "
                                    f"{missing_status} {missing_text[:200]})")
            elif status in (401, 403, 404) or marker in text:
                problems.append(f"{cell} (another endpoint's call must succeed without seeing our data)")
        else:
            allowed = OWNER_KEYS.index(caller) >= OWNER_KEYS.index(required_scope(method, path))
            if not allowed and (status != 403 or (method != "HEAD" and "insufficient_scope" not in text)):
                problems.append(f"{cell} (expected 403 insufficient_scope)")
            if allowed and (status in (401, 403, 404, 429) or status >= 500):
                problems.append(f"{cell} (expected the route's normal answer)")

    assert not problems, "\n".join(problems)
