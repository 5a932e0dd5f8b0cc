"""Schemathesis against a real ``serve`` process: every documented operation, with an admin key, never
answers 5xx, and every answer conforms to the document (status code, content type, body schema).

Random ids rarely name something that exists, so each generated case is sent twice: as generated, and
with its path parameters replaced by ids that exist (a segment with members and rejected rows, an
upload, a complete export job, a succeeded export file job, a segment definition, a schedule and a preview).
"""

import asyncio
import json
import os
import time

import hypothesis
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from gateway.api.openapi import document
from tests.acceptance.cli_process import GatewayProcess
from tests.conftest import ADMIN_KEY, AUTH
from tests.unit.test_openapi_document import routed

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = int(os.environ.get("GATEWAY_TEST_SCHEMATHESIS_EXAMPLES", "12"))
schemathesis.serializer.alias("text/csv", "text/plain")


def prepare(url: str) -> dict[str, str]:
    """Real resources for the cases to hit; returns path parameter values naming them."""
    def call(method: str, path: str, headers=AUTH, **kwargs) -> dict:
        response = requests.request(method, url + path, headers=headers, timeout=30, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    segment = call("POST", "/v1/segments", json={"name": "schemathesis"})["segmentId"]
    call("POST", f"/v1/segments/{segment}/data", data=b"email,name\na@x.com,A\nb@x.com,B\nbad\n",
         headers={**AUTH, "Content-Type": "text/csv"})
    upload = call("GET", f"/api/segments/{segment}/uploads")["uploads"][0]["id"]
    job = call("POST", "/v1/jobs", json={"segmentId": segment, "jobType": "ExportSegmentData"})
    deadline = time.monotonic() + 30
    while call("GET", f"/v1/jobs/{job['jobId']}")["status"] != "complete":
        assert time.monotonic() < deadline, "the export job did not complete"
        time.sleep(0.2)
    export = call("POST", "/api/export/jobs", json={"filter": {"segments": [{"segmentId": segment}]}})
    while call("GET", f"/api/export/jobs/{export['id']}")["status"] != "SUCCEEDED":
        assert time.monotonic() < deadline, "the export file job did not succeed"
        time.sleep(0.2)
    definition = call("POST", "/api/segment/definitions", json={
        "name": "schemathesis", "expression": {"type": "PQL", "format": "pql/text", "value": 'name = "A"'},
        "sources": [segment]})["id"]
    schedule = call("POST", "/api/config/schedules", json={
        "name": "schemathesis", "properties": {"segments": [definition]}, "schedule": "0 0 1 * * ?"})["id"]
    preview = call("POST", "/api/preview", json={"predicateExpression": 'name = "A"', "sources": [segment]})
    return {"segment_id": segment, "job_id": str(job["jobId"]), "data_id": str(job["jobDataId"]),
            "endpoint": "default", "upload": str(upload), "export_id": export["id"],
            "definition_id": definition, "schedule_id": schedule, "preview_id": preview["previewId"],
            "name": "app.js"}  # name: a console file


def run_schemathesis(url: str) -> list[str]:
    doc = json.loads(document())
    schema = schemathesis.openapi.from_dict(doc)
    known = prepare(url)
    live = routed()
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        assert (operation.method.lower(), operation.path) in live
        # 501 is the Exchange's documented signal to create an export job (GET …/data), not a failure:
        # there, any other 5xx still fails the assertion below.
        allows_501 = "501" in doc["paths"][operation.path][operation.method.lower()]["responses"]
        checks = [check for check in CHECKS if not (allows_501 and check is not_a_server_error)]

        @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        @hypothesis.given(case=operation.as_strategy(GenerationMode.POSITIVE)
                          | operation.as_strategy(GenerationMode.NEGATIVE))
        def check(case):
            for replace in (False, True):
                if replace:
                    case.path_parameters = {name: known[name] for name in case.path_parameters or {}}
                    if "upload" in (case.query or {}):
                        case.query["upload"] = known["upload"]
                response = case.call(base_url=url, headers=AUTH, timeout=30)
                case.validate_response(response, checks=checks)
                assert response.status_code < 500 or (allows_501 and response.status_code == 501), response.text

        check()
        tested.append(f"{operation.method.upper()} {operation.path}")
    return tested


async def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path, cluster):
    name = await cluster.create_database(migrated=False)
    process = GatewayProcess("serve", "--port", "0",
                             env={"GATEWAY_DATABASE_URL": cluster.url(name), "GATEWAY_API_KEY": ADMIN_KEY,
                                  "GATEWAY_LOG_LEVEL": "ERROR", "GATEWAY_DATA_DIR": str(tmp_path / "data")})
    try:
        url = process.wait_listening()
        tested = await asyncio.to_thread(run_schemathesis, url)
        assert len(tested) == len(routed()), tested
    finally:
        assert process.stop() == 0
        await cluster.drop_database(name)
