"""Request ids and the JSON access lines."""

from __future__ import annotations

import json
import os
import logging

import pytest

from gateway.ops.logs import JsonFormatter, RequestIdFilter, request_id_from
from tests.conftest import ADMIN_KEY, AUTH


@pytest.fixture
def json_lines():
    """Every gateway log line, formatted as ``serve`` formats it."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture(level=logging.DEBUG)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("gateway")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


async def test_request_id_is_echoed_and_in_every_line(client, json_lines):
    response = await client.post("/v1/segments", json={"name": "Logged"}, headers={**AUTH, "X-Request-ID": "abc-123"})
    assert response.status == 200
    assert response.headers["X-Request-ID"] == "abc-123"
    segment = (await response.json())["result"]["segmentId"]
    body = b"Email,Name\nann@example.com,Ann\n,Nobody\n"
    response = await client.put(f"/v1/segments/{segment}/data", data=body,
                                headers={**AUTH, "Content-Type": "text/csv", "X-Request-ID": "push-1"})
    assert response.status == 200 and response.headers["X-Request-ID"] == "push-1"

    entries = [json.loads(line) for line in json_lines]
    push_lines = [entry for entry in entries if entry["request_id"] == "push-1"]
    assert len(push_lines) >= 2, "the REPLACE commit line and the access line"
    access = [entry for entry in push_lines if entry["logger"] == "gateway.access"]
    assert len(access) == 1
    assert access[0] | {"time": None, "duration_s": None, "bytes_out": None} == {
        "time": None, "pid": os.getpid(), "level": "INFO", "logger": "gateway.access", "message": "PUT /v1/segments/{segment_id}/data 200",
        "request_id": "push-1", "method": "PUT", "route": "/v1/segments/{segment_id}/data", "status": 200,
        "duration_s": None, "rows": 2, "bytes_in": len(body), "bytes_out": None, "segment": int(segment),
        "endpoint": "default"}
    assert access[0]["bytes_out"] > 0
    assert all(ADMIN_KEY not in line and "ann@example.com" not in line for line in json_lines)

    response = await client.get(f"/v1/segments/{segment}/data", headers={**AUTH, "X-Request-ID": "pull-1"})
    assert response.status == 200 and response.headers["X-Request-ID"] == "pull-1"  # a streamed answer


async def test_generated_id_for_errors_and_streams(client, json_lines):
    response = await client.get("/v1/segments/999999/data", headers=AUTH)
    assert response.status == 404
    generated = response.headers["X-Request-ID"]
    assert len(generated) == 32
    assert any(json.loads(line)["request_id"] == generated and json.loads(line)["status"] == 404
               for line in json_lines if '"gateway.access"' in line)
    response = await client.get("/v1/segments", headers={"X-Request-ID": "no-key"})
    assert response.status == 401 and response.headers["X-Request-ID"] == "no-key"


@pytest.mark.parametrize("header, expected", [
    ("ok-ID_1.2:3", "ok-ID_1.2:3"), ("a b\"<c>\x7f", "abc"), ("x" * 200, "x" * 64),
])
def test_request_ids_are_sanitised(header, expected):
    assert request_id_from(header) == expected


def test_request_ids_are_generated_when_missing_or_unusable():
    assert len(request_id_from(None)) == 32
    assert request_id_from("   ") != request_id_from("   ")
