"""``audience-gateway conformance``: it passes against our gateway (real app, real port), and against a
deliberately wrong implementation it fails, naming exactly the checks that its faults break; checks that
depend on a failed one are skipped; usage errors exit 2; ``--junit`` writes the same results as XML."""

from __future__ import annotations

import csv
import io
import itertools
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from aiohttp import web

from gateway.cli import main as cli
from gateway.app import create_app
from gateway.client.conformance import STEPS, ConformanceOptions, conformance
from tests.conftest import ADMIN_KEY
from tests.integration.client_helpers import Outcome, server_url

STUB_KEY = "stub-key"
ALL_CHECKS = [each.name for each in STEPS]


async def run_checker(url: str, key: str = ADMIN_KEY, junit: Path | None = None) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    code = await conformance(ConformanceOptions(url=url, key=key, junit=junit, timeout=10, job_timeout=30,
                                                poll_max=0.05), out, err)
    return Outcome(code, out.getvalue(), err.getvalue())


def check_lines(outcome: Outcome) -> dict[str, str]:
    """check name → the status word on its line (every line before the summary is one check)."""
    lines = outcome.out.splitlines()[:len(ALL_CHECKS)]
    return {line.split()[1].rstrip(":"): line.split()[0] for line in lines}


def named(outcome: Outcome, status: str) -> set[str]:
    return {name for name, word in check_lines(outcome).items() if word == status}


def junit_cases(path: Path) -> tuple[ET.Element, dict[str, ET.Element]]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return suite, {case.get("name", ""): case for case in suite.iter("testcase")}


# -- against our gateway --------------------------------------------------------------------------------

@pytest.fixture
async def gateway(settings, aiohttp_server):
    return server_url(await aiohttp_server(create_app(settings)))


async def test_our_gateway_passes_every_check_and_the_segment_is_deleted(gateway, db, tmp_path):
    junit = tmp_path / "conformance.xml"

    outcome = await run_checker(gateway, junit=junit)

    assert outcome.code == 0, outcome.out
    assert list(check_lines(outcome)) == ALL_CHECKS
    assert named(outcome, "PASS") == set(ALL_CHECKS), outcome.out
    assert f"{len(ALL_CHECKS)} checks against {gateway}: {len(ALL_CHECKS)} passed, 0 failed, 0 skipped" in outcome.out
    assert outcome.out.rstrip().endswith("cleanup: nothing left behind")
    segment = await db.fetchrow("SELECT id, status FROM segments WHERE name LIKE 'conformance %'")
    assert segment["status"] == "deleted"
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'canceled'") == 0
    suite, cases = junit_cases(junit)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (str(len(ALL_CHECKS)), "0", "0")
    assert list(cases) == ALL_CHECKS and not any(len(case) for case in cases.values())


async def test_a_key_that_may_not_delete_leaves_the_segment_named_in_the_summary(gateway, make_key, db):
    write_key = (await make_key("write"))["Authorization"].removeprefix("Bearer ")

    outcome = await run_checker(gateway, key=write_key)

    assert outcome.code == 0, outcome.out
    segment_id = await db.fetchval("SELECT id FROM segments WHERE name LIKE 'conformance %'")
    assert f"left behind: segment {segment_id} " in outcome.out and "HTTP 403" in outcome.out


# -- against a wrong implementation ---------------------------------------------------------------------

class Stub:
    """An in-memory Exchange endpoint with faults: push counts as JSON numbers, no ``responseStatus`` in a
    segment's details, a REPLACE that empties the audience at batch 1 and applies each batch as it comes
    (visible before the last), ``currentBatchNumber`` above ``totalBatchCount`` or without it accepted
    (200, applied).
    GET data always answers 501 (the checker reads back through export jobs). No way to delete a segment.
    With ``broken_create`` segment creation answers 500."""

    def __init__(self, broken_create: bool = False) -> None:
        self.broken_create = broken_create
        self.segments: dict[int, dict] = {}
        self.jobs: dict[int, dict] = {}
        self.ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth])
        app.router.add_post("/v1/segments", self.create)
        app.router.add_get("/v1/segments", self.list)
        app.router.add_get("/v1/segments/{id}", self.details)
        app.router.add_route("*", "/v1/segments/{id}/data", self.data)
        app.router.add_post("/v1/jobs", self.create_job)
        app.router.add_get("/v1/jobs/{id}", self.job)
        app.router.add_get("/v1/jobs/{id}/data/{data}", self.job_data)
        return app

    @web.middleware
    async def auth(self, request, handler):
        if request.headers.get("Authorization") != f"Bearer {STUB_KEY}":
            return failure(401, "unauthorized")
        return await handler(request)

    def segment(self, request) -> dict:
        segment = self.segments.get(int(request.match_info["id"]))
        if segment is None:
            raise web.HTTPNotFound(text='{"responseStatus": "failure", "error": {"code": "segment_not_found", '
                                        '"message": "no such segment"}}', content_type="application/json")
        return segment

    async def create(self, request):
        if self.broken_create:
            return failure(500, "internal_error")
        segment_id = next(self.ids)
        self.segments[segment_id] = {"name": (await request.json())["name"], "attributes": [], "members": {}}
        return success({"segmentId": str(segment_id)})

    async def list(self, request):
        listed = [{"id": key, "name": segment["name"], "type": "Contact Lists"} for key, segment in self.segments.items()]
        return success({"totalCount": len(listed), "list": listed})

    async def details(self, request):
        segment = self.segment(request)
        return web.json_response({"result": {"id": int(request.match_info["id"]), "name": segment["name"],
                                             "segmentAttributes": [{"name": name} for name in segment["attributes"]]}})

    async def data(self, request):
        segment = self.segment(request)
        if request.method == "GET":
            return failure(501, "use_a_job")
        query = request.query
        total, current = query.get("totalBatchCount", "1"), query.get("currentBatchNumber", "1")
        if not (total.isdigit() and current.isdigit()) or int(current) < 1:  # fault: current > total passes
            return failure(400, "invalid_batch")
        if query.get("shareAction", "") not in ("", {"POST": "ADD", "PUT": "REPLACE", "DELETE": "REMOVE"}[request.method]):
            return failure(400, "invalid_share_action")
        header, *rows = list(csv.reader(io.StringIO((await request.read()).decode(), newline="")))
        valid = [row for row in rows if len(row) == len(header)]
        members = segment["members"]
        if request.method == "DELETE":
            removed = [members.pop(row[0].strip().lower()) for row in valid if row[0].strip().lower() in members]
            return success({"segmentId": request.match_info["id"], "numReceived": len(rows),
                            "numInvalid": len(rows) - len(valid), "numRemoved": len(removed)})
        segment["attributes"] = segment["attributes"] or header
        if request.method == "PUT" and current == "1":
            members.clear()
        added = {row[0] for row in valid if row[0] not in members}
        members.update({row[0]: row for row in valid})
        return success({"segmentId": request.match_info["id"], "numReceived": len(rows),
                        "numInvalid": len(rows) - len(valid), "numAdded": len(added)})

    async def create_job(self, request):
        body = await request.json()
        if body.get("jobType") != "ExportSegmentData":
            return failure(400, "invalid_job_type")
        segment = self.segments.get(int(body["segmentId"]))
        if segment is None:
            return failure(404, "segment_not_found")
        job_id = next(self.ids)
        self.jobs[job_id] = {"data": job_id * 10, "rows": [segment["attributes"], *segment["members"].values()]}
        return success({"jobId": job_id, "jobDataId": job_id * 10})

    async def job(self, request):
        job_id = int(request.match_info["id"])
        if job_id not in self.jobs:
            return web.json_response({"responseStatus": "failure", "error": {"code": "job_not_found", "message": "no"},
                                      "result": {"id": job_id, "status": "unknown"}}, status=404)
        return success({"id": job_id, "status": "complete"})

    async def job_data(self, request):
        job = self.jobs.get(int(request.match_info["id"]))
        if job is None or request.match_info["data"] != str(job["data"]):
            return failure(404, "job_data_not_found")
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(job["rows"])
        return web.Response(text=out.getvalue(), content_type="text/csv")


def success(result) -> web.Response:
    return web.json_response({"responseStatus": "success", "result": result})


def failure(status: int, code: str) -> web.Response:
    return web.json_response({"responseStatus": "failure", "error": {"code": code, "message": code}}, status=status)


STUB_FAILURES = {
    # push answers with counts as numbers
    "add_batch", "add_update_and_invalid_row", "replace_batch_1_of_3", "replace_batch_2_of_3",
    "replace_batch_3_of_3", "remove_batch",
    # no responseStatus in the details
    "segment_details", "segment_attributes", "remove_reads_only_identity",
    # REPLACE visible batch by batch
    "replace_invisible_before_last_batch",
    # batch parameters accepted and applied: the data read back then differs
    "batch_number_above_total_400", "bad_requests_changed_nothing", "job_download",
    # a missing totalBatchCount taken as 1
    "batch_count_missing_400",
}


async def test_a_wrong_implementation_fails_the_checks_its_faults_break(aiohttp_server, tmp_path):
    url = server_url(await aiohttp_server(Stub().app()))
    junit = tmp_path / "conformance.xml"

    outcome = await run_checker(url, key=STUB_KEY, junit=junit)

    assert outcome.code == 1, outcome.out
    assert named(outcome, "FAIL") == STUB_FAILURES, outcome.out
    assert named(outcome, "PASS") == set(ALL_CHECKS) - STUB_FAILURES
    lines = outcome.out.splitlines()
    assert 'FAIL add_batch: result: numReceived is 4 (int), expected the string "4"' in lines
    assert "FAIL segment_details: GET /v1/segments/1: responseStatus is 'missing', expected \"success\"" in lines
    assert any(line.startswith("FAIL batch_number_above_total_400: POST /v1/segments/1/data: HTTP 200, expected 400")
               for line in lines)
    assert any(line.startswith("FAIL replace_invisible_before_last_batch: the data read back before the last "
                               "REPLACE batch differs from what was pushed: 4 row(s) missing") for line in lines)
    assert any("1 unexpected [must.not.be.stored@example.com,Bad,Request]" in line
               for line in lines if line.startswith("FAIL bad_requests_changed_nothing"))
    assert (f"{len(ALL_CHECKS)} checks against {url}: {len(ALL_CHECKS) - len(STUB_FAILURES)} passed, "
            f"{len(STUB_FAILURES)} failed, 0 skipped") in outcome.out
    assert "left behind: segment 1 'conformance " in outcome.out and "HTTP 404" in outcome.out
    suite, cases = junit_cases(junit)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        str(len(ALL_CHECKS)), str(len(STUB_FAILURES)), "0")
    failed = {name: case.find("failure") for name, case in cases.items() if case.find("failure") is not None}
    assert set(failed) == STUB_FAILURES
    assert failed["add_batch"].get("message") == 'result: numReceived is 4 (int), expected the string "4"'


async def test_checks_that_need_a_failed_step_are_skipped(aiohttp_server, tmp_path):
    url = server_url(await aiohttp_server(Stub(broken_create=True).app()))
    junit = tmp_path / "conformance.xml"

    outcome = await run_checker(url, key=STUB_KEY, junit=junit)

    assert outcome.code == 1, outcome.out
    independent = {"missing_key_401", "unknown_key_401", "unknown_segment_404", "unknown_segment_data_404",
                   "unknown_job_404"}
    assert named(outcome, "PASS") == independent
    assert named(outcome, "FAIL") == {"create_segment"}
    assert named(outcome, "SKIP") == set(ALL_CHECKS) - independent - {"create_segment"}
    assert "SKIP list_segments: no segment was created" in outcome.out.splitlines()
    assert "FAIL create_segment: POST /v1/segments: HTTP 500, expected 200 (internal_error: internal_error)" in outcome.out
    assert outcome.out.rstrip().endswith("cleanup: nothing left behind")
    suite, cases = junit_cases(junit)
    assert (suite.get("failures"), suite.get("skipped")) == ("1", str(len(ALL_CHECKS) - len(independent) - 1))
    assert cases["job_poll"].find("skipped").get("message") == "no export job was created"


async def test_an_endpoint_that_does_not_answer_fails_without_a_crash(unused_tcp_port):
    outcome = await run_checker(f"http://127.0.0.1:{unused_tcp_port}", key=STUB_KEY)

    assert outcome.code == 1
    assert named(outcome, "PASS") == set()
    assert "FAIL missing_key_401: GET /v1/segments: ClientConnectorError" in outcome.out


# -- usage --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments", [["--url", "http://127.0.0.1:1"], ["--key", "k"],
                                       ["--url", "http://127.0.0.1:1", "--key", "k", "--timeout", "0"]],
                         ids=["no key", "no url", "zero timeout"])
def test_missing_or_bad_options_exit_2(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["conformance", *arguments])
    assert exit_info.value.code == 2
    assert "usage: audience-gateway conformance" in capsys.readouterr().err


def test_a_url_that_is_not_http_exits_2(capsys):
    assert cli.main(["conformance", "--url", "ftp://example.com", "--key", "k"]) == 2
    assert "--url must be an http(s) URL" in capsys.readouterr().err


async def test_an_unwritable_junit_file_exits_2(aiohttp_server, tmp_path):
    url = server_url(await aiohttp_server(Stub(broken_create=True).app()))
    outcome = await run_checker(url, key=STUB_KEY, junit=tmp_path / "missing-dir" / "out.xml")
    assert outcome.code == 2
    assert "cannot write" in outcome.err
