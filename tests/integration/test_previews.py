"""Previews and estimates (``/api/preview``, ``/api/estimate``): pages stable under concurrent pushes, the
exact estimate equal to a count, the sampled estimate's 95 % interval honest over many definitions, and
tenancy and scopes."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import asyncpg
import pytest

from gateway.segmentation import previews
from gateway.segmentation.estimates import estimate
from gateway.segmentation.previews import get_preview
from gateway.app import create_app
from gateway.http.paging import encode_cursor
from tests.conftest import AUTH, GatewayTestServer
from tests.helpers import eventually, members_table
from tests.integration.manage_helpers import api
from tests.integration.pull_helpers import blocked_backends, table_lock
from tests.integration.push_helpers import csv_body, push, push_ok
from tests.integration.segment_job_helpers import endpoint_of, source_with, waiting_for_table

HEADER = ["Email", "Country", "Age"]
COUNTRIES = ["US", "FR", "DE", "JP", "BR"]


def people(count: int, seed: int, prefix: str = "p") -> list[list[str]]:
    rng = random.Random(seed)
    return [[f"{prefix}{i:06d}@x.org", rng.choice(COUNTRIES), str(rng.randint(18, 90))] for i in range(count)]


async def create(client, expression: str, sources: Any = "*", headers: dict[str, str] = AUTH,
                 query: str = "") -> dict[str, Any]:
    return (await api(client, "POST", f"/api/preview{query}", headers,
                      json={"predicateExpression": expression, "predicateType": "pql/text", "sources": sources})).result


async def read_all(client, preview_id: str, limit: int, between=None) -> list[dict[str, Any]]:
    """Every page of a preview, calling ``between()`` after each page but the last."""
    result = (await api(client, "GET", f"/api/preview/{preview_id}?limit={limit}")).result
    found = list(result["results"])
    while "next" in result["links"]:
        assert result["page"]["size"] == limit
        if between is not None:
            await between()
        result = (await api(client, "GET", result["links"]["next"]["href"])).result
        found += result["results"]
    return found


async def test_pages_are_stable_under_concurrent_pushes(client, db):
    rows = people(600, seed=1)
    source = await source_with(client, db, "people", HEADER, rows)
    preview = await create(client, 'Country = "US"', [str(source)])
    assert preview["state"] == "RESULT_READY"
    rng = random.Random(2)
    changed: set[str] = set()
    batch = iter(range(1000))

    async def push_meanwhile() -> None:
        """Between two pages: new members anywhere in identity order, some members moved to US or away
        from it, some removed."""
        n = next(batch)
        new = [[f"p{rng.randrange(600):06d}{n}@x.org", rng.choice(COUNTRIES), "30"] for _ in range(20)]
        moved = rng.sample(rows, 10)
        for row in moved:
            changed.add(row[0])
        await push_ok(client, str(source), csv_body(HEADER, new + [[r[0], rng.choice(COUNTRIES), r[2]]
                                                                   for r in moved]))
        removed = rng.sample(rows, 5)
        changed.update(row[0] for row in removed)
        await push_ok(client, str(source), csv_body(["Email"], [[row[0]] for row in removed]), "REMOVE")

    found = await read_all(client, preview["previewId"], 10, push_meanwhile)
    listed = [item["identity"] for item in found]
    assert len(listed) == len(set(listed)), "no member is listed twice"
    assert listed == sorted(listed, key=lambda identity: identity.encode())
    unchanged_us = {row[0] for row in rows if row[1] == "US" and row[0] not in changed}
    assert len(changed) > 100  # pushes did go on between the pages
    assert unchanged_us <= set(listed), "no unchanged member is skipped"
    assert {item["Country"] for item in found} == {"US"}
    assert set(found[0]) == {"identity", "Country"}


async def test_wait_answers_the_first_page_and_bad_expressions_are_400(client, db):
    source = await source_with(client, db, "people", HEADER, people(30, seed=3))
    first = await create(client, 'Age >= 50 and Country in ["US", "FR"]', query="?wait=true&limit=5")
    assert first["state"] == "RESULT_READY" and first["page"]["size"] == len(first["results"]) <= 5
    assert all(set(item) == {"identity", "Age", "Country"} for item in first["results"])
    reply = await api(client, "POST", "/api/preview", json={"predicateExpression": 'Country = "US" and Nope = 1'})
    reply.assert_failure(400, "invalid_expression")
    assert reply.body["position"] == 19
    reply = await api(client, "POST", "/api/preview", json={"predicateExpression": 'Country = '})
    reply.assert_failure(400, "invalid_expression")
    reply = await api(client, "POST", "/api/preview", json={"predicateExpression": 'Country = "US"',
                                                           "sources": [str(source + 100)]})
    reply.assert_failure(400, "invalid_sources")
    for query in ("?limit=1001", "?limit=0"):
        preview = await create(client, 'Country = "US"')
        (await api(client, "GET", f"/api/preview/{preview['previewId']}{query}")).assert_failure(400, "invalid_limit")
    for cursor in ("zz", encode_cursor({"after": "a\x00"}), encode_cursor({"after": 3})):
        reply = await api(client, "GET", f"/api/preview/{preview['previewId']}?cursor={cursor}")
        reply.assert_failure(400, "invalid_cursor")


async def test_several_sources_are_merged_first_source_first(client, db):
    a = await source_with(client, db, "a", ["Email", "Country"], [["x@x.org", "US"], ["y@x.org", ""]])
    b = await source_with(client, db, "b", ["Email", "Country"], [["y@x.org", "US"], ["z@x.org", "US"],
                                                                 ["x@x.org", "FR"]])
    preview = await create(client, 'Country = "US"', [str(a), str(b)])
    found = await read_all(client, preview["previewId"], 1)
    assert [item["identity"] for item in found] == ["x@x.org", "y@x.org", "z@x.org"]
    answer = (await api(client, "GET", f"/api/estimate/{preview['previewId']}")).result
    assert (answer["estimatedSize"], answer["exact"], answer["profilesReadSoFar"]) == (3, True, 3)


async def test_pages_over_several_sources_merge_their_keys_batch_by_batch(client, db, monkeypatch):
    """A page over several sources reads each source's identities a batch at a time (here 7, so that a page
    takes many rounds and the sources' batches end at different identities): every profile the FULL JOIN
    has and the expression keeps is listed once, in byte order, with the first source's values first."""
    monkeypatch.setattr(previews, "MERGE_BATCH", 7)
    first, second = people(300, seed=13), people(450, seed=14)[150:]
    a = await source_with(client, db, "a", HEADER, first)
    b = await source_with(client, db, "b", ["Email", "Country"], [row[:2] for row in second])
    merged = {row[0]: row[1] for row in second} | {row[0]: row[1] for row in first}
    expected = sorted(identity for identity, country in merged.items() if country in ("US", "FR"))
    preview = await create(client, 'Country in ["US", "FR"]', [str(a), str(b)])
    found = await read_all(client, preview["previewId"], 10)
    assert [item["identity"] for item in found] == expected
    assert all(item["Country"] == merged[item["identity"]] for item in found)


async def test_exact_estimate_equals_the_count(client, db):
    rows = people(3000, seed=4)
    source = await source_with(client, db, "people", HEADER, rows)
    checks = {'Country = "US"': lambda r: r[1] == "US",
              'Age > 60 or Country = "JP"': lambda r: int(r[2]) > 60 or r[1] == "JP",
              'Country = "XX"': lambda r: False}
    for expression, keep in checks.items():
        preview = await create(client, expression)
        answer = (await api(client, "GET", f"/api/estimate/{preview['previewId']}")).result
        expected = sum(1 for row in rows if keep(row))
        counted = await db.fetchval(
            f"SELECT count(*) FROM audience.members_{source} WHERE " +
            {'Country = "US"': "attrs[2] = 'US'", 'Age > 60 or Country = "JP"': "attrs[3]::int > 60 OR attrs[2] = 'JP'",
             'Country = "XX"': "false"}[expression])
        assert answer["estimatedSize"] == expected == counted, (expression, answer)
        assert answer["exact"] is True and answer["standardError"] == 0
        assert answer["lowerBound"] == answer["upperBound"] == expected
        assert answer["profilesReadSoFar"] == answer["totalRows"] == 3000
        assert answer["confidenceInterval"] == "95%" and answer["state"] == "RESULT_READY"


def random_definition(rng: random.Random) -> tuple[str, Any]:
    """A random expression over Country and Age, and the same test in Python."""
    def atom() -> tuple[str, Any]:
        kind = rng.randrange(3)
        if kind == 0:
            country = rng.choice(COUNTRIES)
            return f'Country = "{country}"', lambda r, c=country: r[1] == c
        if kind == 1:
            age = rng.randint(18, 95)
            return f"Age > {age}", lambda r, a=age: int(r[2]) > a
        chosen = rng.sample(COUNTRIES, rng.randint(1, 4))
        listed = ", ".join(f'"{c}"' for c in chosen)
        return f"Country in [{listed}]", lambda r, cs=tuple(chosen): r[1] in cs

    (left, f), (right, g) = atom(), atom()
    if rng.random() < 0.5:
        return f"{left} and {right}", lambda r: f(r) and g(r)
    return f"{left} or {right}", lambda r: f(r) or g(r)


@pytest.mark.parametrize("method, sources", [("SYSTEM", 1), ("BERNOULLI", 1), ("SYSTEM", 2)])
async def test_sampled_intervals_contain_the_true_count_at_least_45_times_in_50(client, db, method, sources):
    """40,000 profiles (with two sources: 30,000 each, half of them in both, first source first), samples of
    about 4,000 rows (10 % with one source, under 7 % with two): the 95 % interval of at least 45 of 50
    random definitions holds the true count. With one source the identities begin with the country, so a
    page holds one country: a SYSTEM sample's error counted by rows instead of pages would be far too small."""
    if sources == 1:
        rows = [[f"{row[1].lower()}-{row[0]}", *row[1:]] for row in people(40_000, seed=5)]
        source = await source_with(client, db, "people", HEADER, rows)
    else:
        first, second = people(30_000, seed=10), people(40_000, seed=11)[10_000:]
        source = await source_with(client, db, "a", HEADER, first)
        await source_with(client, db, "b", HEADER, second)
        rows = first + second[20_000:]  # an identity in both is the first source's
        assert len({row[0] for row in rows}) == 40_000
    endpoint_id = await endpoint_of(db, source)
    rng = random.Random(6)
    covered = 0
    for _ in range(50):
        expression, keep = random_definition(rng)
        preview = await create(client, expression)
        row = await get_preview(db, endpoint_id, int(preview["previewId"]))
        answer = await estimate(db, endpoint_id, row, exact_ms=0, sample_rows=4000, method=method,
                                seed=rng.randrange(10**6))
        assert answer["exact"] is False and answer["sampleMethod"] == method
        assert answer["profilesReadSoFar"] < 10_000
        assert answer["totalRows"] == (40_000 if sources == 1 else 60_000)
        truth = sum(1 for r in rows if keep(r))
        covered += answer["lowerBound"] <= truth <= answer["upperBound"]
    assert covered >= 45


async def test_a_count_over_its_budget_is_canceled_and_the_estimate_sampled(client, db, database_url):
    """The exact count is stopped by its statement timeout (held here by a lock on the members table, so
    that it cannot finish in time), and the estimate goes on with a sample in the same transaction."""
    rows = people(5000, seed=12)
    source = await source_with(client, db, "people", HEADER, rows)
    endpoint_id = await endpoint_of(db, source)
    preview = await create(client, 'Country = "US"')
    row = await get_preview(db, endpoint_id, int(preview["previewId"]))
    estimator = await asyncpg.connect(database_url)
    try:
        assert (await estimate(estimator, endpoint_id, row, exact_ms=10_000, sample_rows=500))["exact"]  # types
        async with db.transaction():
            await db.execute(f"LOCK TABLE {members_table(source)} IN ACCESS EXCLUSIVE MODE")
            # a seed of its own: with a new one each run, 1 run in 20 would miss by chance (the coverage is
            # test_sampled_intervals_…'s business)
            task = asyncio.ensure_future(estimate(estimator, endpoint_id, row, exact_ms=50, sample_rows=500,
                                                  seed=1))

            async def sampling() -> bool:
                if task.done():
                    task.result()  # it cannot have finished: say why it ended
                await db.execute("SELECT pg_stat_clear_snapshot()")  # a transaction sees one snapshot of it
                return await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                         "AND query LIKE '-- A sample''s sums per source%'") == 1

            await eventually(sampling, "the estimate to give up its count and wait to sample")
        answer = await asyncio.wait_for(task, 10)
    finally:
        await estimator.close()
    assert answer["exact"] is False and answer["sampleMethod"] == "SYSTEM" and answer["profilesReadSoFar"] < 5000
    truth = sum(1 for r in rows if r[1] == "US")
    assert answer["lowerBound"] <= truth <= answer["upperBound"]


async def test_the_route_samples_when_the_exact_budget_is_spent(aiohttp_client, settings, db):
    client = await aiohttp_client(GatewayTestServer(create_app(
        dataclasses.replace(settings, estimate_exact_ms=0, estimate_sample_rows=500))))
    await source_with(client, db, "people", HEADER, people(5000, seed=7))
    preview = await create(client, 'Country = "US"')
    answer = (await api(client, "GET", f"/api/estimate/{preview['previewId']}")).result
    assert answer["exact"] is False and answer["standardError"] > 0
    assert answer["lowerBound"] <= answer["estimatedSize"] <= answer["upperBound"]
    assert answer["profilesReadSoFar"] < 5000 and answer["totalRows"] == 5000


async def test_another_endpoints_preview_is_404_and_sources_stay_within_the_endpoint(client, db, make_key):
    mine = await source_with(client, db, "people", HEADER, people(10, seed=8))
    other = await make_key("admin", endpoint="other")
    preview = await create(client, 'Country = "US"')
    path = preview["previewId"]
    for method, route in (("GET", f"/api/preview/{path}"), ("GET", f"/api/estimate/{path}"),
                          ("DELETE", f"/api/preview/{path}")):
        (await api(client, method, route, other)).assert_failure(404, "preview_not_found")
    reply = await api(client, "POST", "/api/preview", other,
                      json={"predicateExpression": 'Country = "US"', "sources": [str(mine)]})
    reply.assert_failure(400, "invalid_sources")
    # "*" is every source of their endpoint: none has a Country
    reply = await api(client, "POST", "/api/preview", other, json={"predicateExpression": 'Country = "US"'})
    reply.assert_failure(400, "invalid_expression")
    (await api(client, "GET", f"/api/preview/{path}")).result  # still mine
    (await api(client, "DELETE", f"/api/preview/{path}")).result
    (await api(client, "GET", f"/api/preview/{path}")).assert_failure(404, "preview_not_found")
    (await api(client, "GET", "/api/preview/abc")).assert_failure(404, "preview_not_found")
    expiring = await create(client, 'Country = "US"')
    await db.execute("UPDATE previews SET expires_at = now() - interval '1 second' WHERE id = $1",
                     int(expiring["previewId"]))
    (await api(client, "GET", f"/api/estimate/{expiring['previewId']}")).assert_failure(404, "preview_not_found")
    await create(client, 'Country = "US"')  # a create sweeps the expired ones
    assert await db.fetchval("SELECT count(*) FROM previews WHERE id = $1", int(expiring["previewId"])) == 0


async def test_reading_needs_write_scope_and_changing_needs_admin(client, db, make_key):
    await source_with(client, db, "people", HEADER, people(10, seed=9))
    read, write = await make_key("read"), await make_key("write")
    preview = (await create(client, 'Country = "US"'))["previewId"]
    body = {"predicateExpression": 'Country = "US"'}
    for headers, allowed in ((read, set()), (write, {"GET"})):
        for method, route, options in (("POST", "/api/preview", {"json": body}),
                                       ("GET", f"/api/preview/{preview}", {}),
                                       ("GET", f"/api/estimate/{preview}", {}),
                                       ("DELETE", f"/api/preview/{preview}", {})):
            reply = await api(client, method, route, headers, **options)
            if method in allowed:
                assert reply.status == 200, reply.text
            else:
                reply.assert_failure(403, "insufficient_scope")


@pytest.mark.parametrize("read", ["page", "estimate"])
async def test_a_replace_of_a_source_committing_during_a_read_does_not_empty_it(client, db, database_url, read):
    """A page's (an estimate's) snapshot share-locks its sources' rows first: a REPLACE of a source waits for
    it, instead of swapping in a members table the snapshot would read as empty (the page would end without
    the source's members, the count would miss them). Held as in test_segment_jobs: the test locks source
    A's members table, which the read opens first, then sends the REPLACE of B, and releases the lock once
    the REPLACE committed (as it could before) or waits for a lock itself (the read's)."""
    a = await source_with(client, db, "a", ["Email", "Country"], [["a1@x.org", "US"]])
    b = await source_with(client, db, "b", ["Email", "Country"], [["b1@x.org", "US"], ["b2@x.org", "US"]])
    preview = await create(client, 'Country = "US"', [str(a), str(b)])
    path = f"/api/preview/{preview['previewId']}?limit=10" if read == "page" else \
        f"/api/estimate/{preview['previewId']}"
    members_a = members_table(str(a))
    tasks: list[asyncio.Task] = []
    try:
        async with table_lock(database_url, members_a):
            tasks.append(asyncio.create_task(api(client, "GET", path)))
            await eventually(lambda: waiting_for_table(db, members_a), f"the {read} to wait for A's members table")
            replaced = asyncio.create_task(push(client, str(b), csv_body(["Email", "Country"], [["b3@x.org", "US"]]),
                                                "REPLACE", total=1, number=1))
            tasks.append(replaced)

            async def replace_committed_or_waits() -> bool:
                return replaced.done() or await blocked_backends(db) >= 2

            await eventually(replace_committed_or_waits, f"the REPLACE to commit or to wait for the {read}")
        answer, reply = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    assert reply.result["replaceCommitted"] is True
    if read == "page":
        assert [item["identity"] for item in answer.result["results"]] == ["a1@x.org", "b1@x.org", "b2@x.org"]
    else:
        assert (answer.result["estimatedSize"], answer.result["exact"]) == (3, True)
