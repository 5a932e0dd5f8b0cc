"""``GET /v1/segments/{id}/data``: 200 CSV for 1..GATEWAY_SYNC_EXPORT_MAX_ROWS members, else 501 (use a job);
404 for what this endpoint cannot see."""

from tests.integration.pull_helpers import HEADER, by_identity, people, segment_with, sync_get, sync_rows, without_id
from tests.integration.push_helpers import app_client, csv_body, push_ok

LIMIT = 3


async def test_sync_limit_is_inclusive_and_empty_is_501(aiohttp_client, settings):
    client = await app_client(aiohttp_client, settings, sync_export_max_rows=LIMIT)
    at_limit = people(LIMIT)
    assert await sync_rows(client, await segment_with(client, at_limit)) == (HEADER, by_identity(at_limit))

    over_limit = await segment_with(client, people(LIMIT + 1))
    never_uploaded = await segment_with(client, [])
    emptied = await segment_with(client, people(1))
    await push_ok(client, emptied, csv_body(HEADER, people(1)), "REMOVE")
    for segment_id in (over_limit, never_uploaded, emptied):
        (await sync_get(client, segment_id)).assert_failure(501, "use_export_job")


async def test_unknown_or_other_endpoints_segment_is_404(client, make_key):
    other = await make_key("admin", endpoint="other")
    theirs = await segment_with(client, people(2), headers=other)
    assert (await sync_get(client, theirs, headers=other)).status == 200  # it exists, for its endpoint

    seen_from_here = (await sync_get(client, theirs)).assert_failure(404, "segment_not_found")
    unknown = int(theirs) + 1000
    missing = (await sync_get(client, unknown)).assert_failure(404, "segment_not_found")
    assert without_id(seen_from_here, theirs) == without_id(missing, unknown)
    for malformed in ("abc", "0", "-1", "99999999999999999999"):
        (await sync_get(client, malformed)).assert_failure(404)
