"""``GET /metrics``: counters move by exactly what was pushed, histograms by route pattern, DB gauges."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from tests.conftest import AUTH

CSV = {"Content-Type": "text/csv", **AUTH}


async def scrape(client, headers=None) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` from the Prometheus text page."""
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before, after, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def new_segment(client) -> int:
    response = await client.post("/v1/segments", json={"name": "Metrics"}, headers=AUTH)
    return int((await response.json())["result"]["segmentId"])


async def test_push_counters_move_by_exactly_what_was_pushed(client):
    segment = await new_segment(client)
    before = await scrape(client)
    body = b"Email,Name\nann@example.com,Ann\nbob@example.com,Bob\n,NoIdentity\nbad,row,extra\n"
    response = await client.post(f"/v1/segments/{segment}/data", data=body, headers=CSV)
    assert response.status == 200
    removal = b"Email\nann@example.com\n"
    assert (await client.delete(f"/v1/segments/{segment}/data", data=removal, headers=CSV)).status == 200
    after = await scrape(client)

    assert delta(before, after, "audience_gateway_rows_received_total", method="POST") == 4
    assert delta(before, after, "audience_gateway_rows_invalid_total", method="POST") == 2
    assert delta(before, after, "audience_gateway_rows_added_total", method="POST") == 2
    assert delta(before, after, "audience_gateway_rows_received_total", method="DELETE") == 1
    assert delta(before, after, "audience_gateway_rows_removed_total", method="DELETE") == 1
    assert delta(before, after, "audience_gateway_received_bytes_total", method="POST") == len(body)
    assert delta(before, after, "audience_gateway_batch_duration_seconds_count", method="POST") == 1
    route = "/v1/segments/{segment_id}/data"
    assert delta(before, after, "audience_gateway_request_duration_seconds_count",
                 method="POST", route=route, status="200") == 1
    assert not any(f"/v1/segments/{segment}/" in dict(labels).get("route", "") for _, labels in after)
    assert value(after, "audience_gateway_uploads_in_flight") == 0


async def test_replace_commit_gauges_and_pool(client):
    segment = await new_segment(client)
    before = await scrape(client)
    url = f"/v1/segments/{segment}/data?totalBatchCount=2&currentBatchNumber="
    await client.put(url + "1", data=b"Email\na@example.com\n", headers=CSV)
    during = await scrape(client)
    assert value(during, "audience_gateway_replace_sessions_open") == 1
    await client.put(url + "2", data=b"Email\nb@example.com\n", headers=CSV)
    after = await scrape(client)
    assert value(after, "audience_gateway_replace_sessions_open") == 0
    assert delta(before, after, "audience_gateway_replace_commits_total") == 1
    assert delta(before, after, "audience_gateway_rows_added_total", method="PUT") == 2
    assert value(after, "audience_gateway_pool_connections") >= 1
    assert ("audience_gateway_pool_connections_in_use", ()) in after
    for status in ("waiting", "running", "complete", "error", "canceled"):
        assert ("audience_gateway_jobs", (("status", status),)) in after
    assert ("audience_gateway_replace_expiries_total", ()) in after
    assert ("audience_gateway_export_rows_total", ()) in after


async def test_unmatched_paths_are_not_labelled_by_path(client):
    await client.get("/no/such/thing/12345", headers=AUTH)
    samples = await scrape(client)
    routes = {dict(labels).get("route") for name, labels in samples
              if name == "audience_gateway_request_duration_seconds_count"}
    assert "unmatched" in routes and not any("12345" in (route or "") for route in routes)


@pytest.mark.parametrize("require", [False, True])
async def test_metrics_key_setting(aiohttp_client, settings, make_key, require):
    client = await aiohttp_client(create_app(dataclasses.replace(settings, metrics_require_key=require)))
    response = await client.get("/metrics")
    assert response.status == (401 if require else 200)
    if require:
        await scrape(client, headers=await make_key("read"))
