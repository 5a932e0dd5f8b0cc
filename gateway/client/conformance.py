"""``audience-gateway conformance``: run the Exchange call sequence against any endpoint and check it.

The calls are the ones Exchange makes (``/work/shared/spec``: the contract and the source document): create
a segment, list it, describe it, ADD, REPLACE in three batches, REMOVE with the document's shapes, read the
data back (directly, or by an export job on 501), an export job created, polled and downloaded, and the
failures the contract fixes (401, 404, bad batch parameters). Each check is a small named step; it checks
the status code, the envelope, field names and types (counts as strings, ids as the examples show) and
that the data read back is what was pushed. The checker keeps its own model of the audience it pushed.

A step that needs something an earlier step did not get (a segment, a known audience, a job) is reported
as skipped, not run. Steps never rely on a REPLACE batch re-sent after its session committed (the
contract makes it a new session; no shortcut is tested).

It cleans up what it created where the endpoint allows: it cancels its export jobs (``DELETE
/v1/jobs/{id}``, beyond the source) and deletes the segment with ``DELETE /api/segments/{id}?purge=true``
(this gateway's management API, admin scope: the Exchange API has no way to delete a segment); what
could not be removed is named in the summary.

Exit codes: 0 every check passed, 1 a check failed (or was skipped because of one), 2 usage.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import dataclasses
import io
import re
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway.client.http import describe, new_session

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
CSV_HEADERS = {"Content-Type": "text/csv; charset=utf-8"}
SEGMENT_TYPES = ("Contact Lists", "Databases", "Queries")
JOB_STATUSES = frozenset({"waiting", "running", "complete", "error", "canceled"})
UNKNOWN_ID = "987654321987"  # a segment / job id no endpoint under test is expected to have
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
MAX_SHOWN = 3  # differing rows named in a failure

# The data pushed, as the source document's examples (identities lower-case: email columns are normalised).
HEADER = ["Email", "FirstName", "LastName"]
ADD_ROWS = [["irene.ferguson@example.com", "Irene", "Ferguson"], ["jimmy.cox@example.com", "Jimmy", "Cox"],
            ["pamela.williams@example.com", "Pamela", "Williams"], ["jerry.campbell@example.com", "Jerry", "Campbell"]]
UPDATE_ROW = ["jerry.campbell@example.com", "Gerald", "Campbell"]  # already a member: numAdded 0
INVALID_LINE = "howard.bennett@example.com,Howard\n"  # two fields under a three-field header: line 3
REPLACE_BATCHES = [
    [["tina.jones@example.com", "Tina", "Jones"], ["jimmy.cox@example.com", "James", "Cox"]],
    [["joan.williams@example.com", "Joan", 'Williams, "Jo"'], ["john.smith@example.com", "John", "Smith"]],
    [["irene.ferguson@example.com", "Irene", "Ferguson-Smith"], ["anna.lee@example.com", "Anna", "Lee"]],
]
# REMOVE as the document shows it: other column names, every column sent; only the identity (first) counts.
REMOVE_BODY = ("EmailAddress,First,Last,Gender\n"
               "tina.jones@example.com,Tina,Jones,F\n"
               "JOHN.SMITH@example.com,Jonathan,Smith,M\n"  # identities in an email column are lower-cased
               "nobody@example.com,No,Body,M\n")
REMOVED = ("tina.jones@example.com", "john.smith@example.com")
NOT_APPLIED_ROW = ["must.not.be.stored@example.com", "Bad", "Request"]


@dataclasses.dataclass
class ConformanceOptions:
    url: str
    key: str
    junit: Path | None = None
    timeout: float = 30.0  # longest wait for a connection or the next bytes of an answer
    job_timeout: float = 120.0  # longest wait for an export job to complete
    poll_max: float = 1.0  # seconds between job polls, at most


class CheckFailed(Exception):
    """The endpoint's answer is not the contract's; the message says how."""


@dataclasses.dataclass
class Outcome:
    name: str
    status: str
    reason: str
    seconds: float


@dataclasses.dataclass
class Reply:
    method: str
    path: str
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


class Run:
    """What the steps share: the sessions, what was created and the audience the endpoint should hold."""

    def __init__(self, options: ConformanceOptions, keyed: aiohttp.ClientSession,
                 anonymous: aiohttp.ClientSession) -> None:
        self.options = options
        self.base = options.url.rstrip("/")
        self.keyed = keyed
        self.anonymous = anonymous
        self.token = uuid.uuid4().hex[:12]
        self.name = f"conformance {self.token}"
        self.segment_id: str | None = None
        self.audience: dict[str, list[str]] | None = None  # identity → row; None once a push went unanswered
        self.staged: list[list[str]] = []  # REPLACE rows staged, not yet live
        self.job: dict[str, int] | None = None
        self.jobs: list[int] = []  # every export job created, for the cleanup

    async def call(self, method: str, path: str, *, anonymous: bool = False, **kwargs: Any) -> Reply:
        session = self.anonymous if anonymous else self.keyed
        try:
            async with session.request(method, self.base + path, **kwargs) as response:
                body = await response.read()
                return Reply(method, path, response.status, response.content_type, body)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CheckFailed(f"{method} {path}: {describe(exc)}") from None

    def data_path(self) -> str:
        return f"/v1/segments/{self.segment_id}/data"


# -- the steps ------------------------------------------------------------------------------------------

Check = Callable[[Run], Awaitable[None]]


@dataclasses.dataclass
class Step:
    name: str
    run: Check
    needs: tuple[str, ...]  # Run attributes that must be set (see NEEDS)


STEPS: list[Step] = []
NEEDS = {"segment_id": "no segment was created",
         "audience": "the expected audience is unknown (an earlier push was not accepted)",
         "job": "no export job was created"}


def step(name: str, *needs: str) -> Callable[[Check], Check]:
    """Register the decorated check as the next step of the sequence."""
    def register(function: Check) -> Check:
        STEPS.append(Step(name, function, needs))
        return function
    return register


@step("missing_key_401")
async def missing_key(run: Run) -> None:
    expect_failure(await run.call("GET", "/v1/segments", anonymous=True), 401)


@step("unknown_key_401")
async def unknown_key(run: Run) -> None:
    headers = {"Authorization": f"Bearer conformance-unknown-key-{run.token}"}
    expect_failure(await run.call("GET", "/v1/segments", anonymous=True, headers=headers), 401)


@step("create_segment")
async def create_segment(run: Run) -> None:
    reply = await run.call("POST", "/v1/segments", json={
        "name": run.name, "description": "audience-gateway conformance check", "category": "conformance"})
    body = reply.json()
    if reply.status == 200 and isinstance(body, dict) and isinstance(body.get("result"), dict):
        segment_id = body["result"].get("segmentId")
        if segment_id is not None:
            run.segment_id, run.audience = str(segment_id), {}
    result = success_result(reply)
    field(result, "segmentId", digits, "a string of digits, as in the source's example")


@step("list_segments", "segment_id")
async def list_segments(run: Run) -> None:
    result = success_result(await run.call("GET", "/v1/segments"))
    total = field(result, "totalCount", is_int, "an integer")
    listed = field(result, "list", lambda value: isinstance(value, list), "a list")
    if total != len(listed):
        raise CheckFailed(f"totalCount is {total} but the list has {len(listed)} segments")
    for item in listed:
        field(item, "id", is_int, "an integer", where="a listed segment")
        field(item, "name", is_str, "a string", where="a listed segment")
        if "type" in item and item["type"] not in SEGMENT_TYPES:
            raise CheckFailed(f"a listed segment has type {item['type']!r}, not one of {', '.join(SEGMENT_TYPES)}")
    ours = [item for item in listed if str(item["id"]) == run.segment_id]
    if len(ours) != 1 or ours[0]["name"] != run.name:
        raise CheckFailed(f"segment {run.segment_id} named {run.name!r} is not listed once: {ours}")


@step("segment_details", "segment_id")
async def segment_details(run: Run) -> None:
    result = await details(run)
    if result["segmentAttributes"]:
        raise CheckFailed(f"a new segment has attributes {attribute_names(result)}")


@step("add_batch", "segment_id")
async def add_batch(run: Run) -> None:
    reply = await push(run, "POST", csv_text(HEADER, ADD_ROWS), "ADD")
    if reply.status == 200 and run.audience is not None:
        run.audience.update({row[0]: row for row in ADD_ROWS})
    expect_counts(run, reply, numReceived="4", numInvalid="0", numAdded="4")


@step("add_update_and_invalid_row", "segment_id")
async def add_update_and_invalid_row(run: Run) -> None:
    reply = await push(run, "POST", csv_text(HEADER, [UPDATE_ROW]) + INVALID_LINE, "ADD")
    if reply.status == 200 and run.audience is not None:
        run.audience[UPDATE_ROW[0]] = UPDATE_ROW
    result = expect_counts(run, reply, numReceived="2", numInvalid="1", numAdded="0")
    samples = result.get("invalidSamples")
    if samples is not None and (not isinstance(samples, list) or len(samples) != 1
                                or not isinstance(samples[0], dict) or samples[0].get("line") != 3
                                or not is_str(samples[0].get("reason"))):
        raise CheckFailed(f'invalidSamples is {samples!r}, expected [{{"line": 3, "reason": "…"}}]')


@step("segment_attributes", "segment_id", "audience")
async def segment_attributes(run: Run) -> None:
    await expect_attributes(run)


@step("read_after_add", "segment_id", "audience")
async def read_after_add(run: Run) -> None:
    await expect_audience(run)


@step("replace_batch_1_of_3", "segment_id")
async def replace_batch_1(run: Run) -> None:
    await replace_batch(run, 1)


@step("replace_batch_2_of_3", "segment_id")
async def replace_batch_2(run: Run) -> None:
    await replace_batch(run, 2)


@step("replace_invisible_before_last_batch", "segment_id", "audience")
async def replace_invisible(run: Run) -> None:
    await expect_audience(run, "before the last REPLACE batch")


@step("replace_batch_3_of_3", "segment_id")
async def replace_batch_3(run: Run) -> None:
    await replace_batch(run, 3)


@step("replace_visible_after_last_batch", "segment_id", "audience")
async def replace_visible(run: Run) -> None:
    await expect_audience(run, "after the last REPLACE batch")


@step("remove_batch", "segment_id")
async def remove_batch(run: Run) -> None:
    reply = await push(run, "DELETE", REMOVE_BODY, "REMOVE")
    if reply.status == 200 and run.audience is not None:
        for identity in REMOVED:
            run.audience.pop(identity, None)
    expect_counts(run, reply, numReceived="3", numInvalid="0", numRemoved="2")


@step("remove_reads_only_identity", "segment_id", "audience")
async def remove_reads_only_identity(run: Run) -> None:
    await expect_attributes(run)
    await expect_audience(run, "after REMOVE")


@step("unknown_segment_404")
async def unknown_segment(run: Run) -> None:
    expect_failure(await run.call("GET", f"/v1/segments/{UNKNOWN_ID}"), 404)


@step("unknown_segment_data_404")
async def unknown_segment_data(run: Run) -> None:
    expect_failure(await run.call("POST", f"/v1/segments/{UNKNOWN_ID}/data", headers=CSV_HEADERS,
                                  data=csv_text(HEADER, [NOT_APPLIED_ROW]).encode()), 404)


def bad_batch_step(name: str, method: str, parameters: dict[str, str]) -> None:
    """A push whose batch parameters the contract refuses: 400, nothing applied."""
    async def check(run: Run) -> None:
        reply = await run.call(method, run.data_path(), params=parameters, headers=CSV_HEADERS,
                               data=csv_text(HEADER, [NOT_APPLIED_ROW]).encode())
        expect_failure(reply, 400)
    STEPS.append(Step(name, check, ("segment_id",)))


bad_batch_step("batch_number_above_total_400", "POST", {"totalBatchCount": "2", "currentBatchNumber": "3"})
bad_batch_step("batch_count_not_integer_400", "POST", {"totalBatchCount": "two", "currentBatchNumber": "1"})
bad_batch_step("batch_count_missing_400", "POST", {"currentBatchNumber": "1"})
bad_batch_step("batch_number_zero_400", "PUT", {"totalBatchCount": "1", "currentBatchNumber": "0"})
bad_batch_step("share_action_mismatch_400", "POST", {"shareAction": "REMOVE"})


@step("bad_requests_changed_nothing", "segment_id", "audience")
async def bad_requests_changed_nothing(run: Run) -> None:
    await expect_audience(run, "after the refused pushes")


@step("segment_data", "segment_id")
async def segment_data(run: Run) -> None:
    reply = await run.call("GET", run.data_path())
    if reply.status == 501:
        expect_failure(reply, 501)
    elif reply.status == 200:
        header, _ = csv_rows(reply)
        if run.audience is not None and header != HEADER:
            raise CheckFailed(f"the first row is {header}, expected the attributes {HEADER}")
    else:
        raise CheckFailed(f"{reply}: HTTP {reply.status}, expected 200 (CSV) or 501")


@step("job_create", "segment_id")
async def job_create(run: Run) -> None:
    run.job = await create_job(run)


@step("job_poll", "job")
async def job_poll(run: Run) -> None:
    assert run.job is not None
    await wait_for_job(run, run.job)


@step("job_download", "job", "audience")
async def job_download(run: Run) -> None:
    assert run.job is not None
    reply = await run.call("GET", f"/v1/jobs/{run.job['jobId']}/data/{run.job['jobDataId']}")
    compare(run, *csv_rows(reply), "in the export job's data")


@step("job_data_mismatch_404", "job")
async def job_data_mismatch(run: Run) -> None:
    assert run.job is not None
    expect_failure(await run.call("GET", f"/v1/jobs/{run.job['jobId']}/data/{run.job['jobDataId'] + 1}"), 404)


@step("unknown_job_404")
async def unknown_job(run: Run) -> None:
    reply = await run.call("GET", f"/v1/jobs/{UNKNOWN_ID}")
    body = expect_failure(reply, 404)
    result = body.get("result")
    if not isinstance(result, dict) or result.get("status") != "unknown":
        raise CheckFailed(f'{reply}: result is {result!r}, expected {{"id": …, "status": "unknown"}}')


@step("job_type_invalid_400", "segment_id")
async def job_type_invalid(run: Run) -> None:
    expect_failure(await run.call("POST", "/v1/jobs", json={"segmentId": segment_number(run),
                                                            "jobType": "NotAJobType"}), 400)


# -- what the steps share -------------------------------------------------------------------------------

async def push(run: Run, method: str, body: str, action: str, batch: tuple[int, int] = (1, 1),
               source_segment: str = "") -> Reply:
    """One batch as Exchange sends it; a push that is not accepted makes the expected audience unknown."""
    parameters = {"totalBatchCount": str(batch[1]), "currentBatchNumber": str(batch[0]), "shareAction": action,
                  "category": "conformance", "sourceEndpointID": "audience-gateway-conformance",
                  "sourceSegmentID": source_segment or f"conformance-{run.token}-{action.lower()}"}
    reply = await run.call(method, run.data_path(), params=parameters, headers=CSV_HEADERS, data=body.encode())
    if reply.status != 200:
        run.audience = None
    return reply


async def replace_batch(run: Run, number: int) -> None:
    rows = REPLACE_BATCHES[number - 1]
    reply = await push(run, "PUT", csv_text(HEADER, rows), "REPLACE", (number, len(REPLACE_BATCHES)))
    if reply.status == 200:
        run.staged.extend(rows)
        if number == len(REPLACE_BATCHES) and run.audience is not None:
            run.audience = {row[0]: row for row in run.staged}
    result = expect_counts(run, reply, numReceived=str(len(rows)), numInvalid="0", numAdded=str(len(rows)))
    committed = result.get("replaceCommitted")
    if committed is not None and committed is not (number == len(REPLACE_BATCHES)):
        raise CheckFailed(f"replaceCommitted is {committed!r} on batch {number} of {len(REPLACE_BATCHES)}")


async def details(run: Run) -> dict[str, Any]:
    result = success_result(await run.call("GET", f"/v1/segments/{run.segment_id}"))
    field(result, "id", lambda value: is_int(value) and str(value) == run.segment_id, f"the integer {run.segment_id}")
    field(result, "name", lambda value: value == run.name, repr(run.name))
    attributes = field(result, "segmentAttributes", lambda value: isinstance(value, list), "a list")
    for attribute in attributes:
        field(attribute, "name", is_str, "a string", where="an item of segmentAttributes")
    return result


async def expect_attributes(run: Run) -> None:
    names = attribute_names(await details(run))
    if names != HEADER:
        raise CheckFailed(f"segmentAttributes are {names}, expected {HEADER}")


async def expect_audience(run: Run, when: str = "") -> None:
    """Read the data back (directly, or by an export job on 501) and compare it with what was pushed."""
    reply = await run.call("GET", run.data_path())
    if reply.status == 501:
        expect_failure(reply, 501)
        job = await create_job(run)
        await wait_for_job(run, job)
        reply = await run.call("GET", f"/v1/jobs/{job['jobId']}/data/{job['jobDataId']}")
    compare(run, *csv_rows(reply), when)


async def create_job(run: Run) -> dict[str, int]:
    reply = await run.call("POST", "/v1/jobs", json={"segmentId": segment_number(run), "jobType": "ExportSegmentData"})
    result = success_result(reply)
    job_id = field(result, "jobId", is_int, "an integer, as in the source's example")
    data_id = field(result, "jobDataId", is_int, "an integer, as in the source's example")
    run.jobs.append(job_id)
    return {"jobId": job_id, "jobDataId": data_id}


async def wait_for_job(run: Run, job: dict[str, int]) -> None:
    """Poll until complete (with a growing pause, at most ``job_timeout`` in all)."""
    deadline = time.monotonic() + run.options.job_timeout
    pause = 0.05
    while True:
        result = success_result(await run.call("GET", f"/v1/jobs/{job['jobId']}"))
        field(result, "id", lambda value: value == job["jobId"], f"the job's id {job['jobId']}")
        status = field(result, "status", lambda value: value in JOB_STATUSES, " or ".join(sorted(JOB_STATUSES)))
        if status == "complete":
            return
        if status in ("error", "canceled"):
            raise CheckFailed(f"export job {job['jobId']} ended {status}: {result.get('reason', '')}")
        if time.monotonic() > deadline:
            raise CheckFailed(f"export job {job['jobId']} is still {status} after {run.options.job_timeout:g} s")
        await asyncio.sleep(pause)
        pause = min(pause * 2, run.options.poll_max)


def compare(run: Run, header: list[str], rows: list[list[str]], when: str) -> None:
    assert run.audience is not None
    where = f" {when}" if when else ""
    if header != HEADER:
        raise CheckFailed(f"the data read back{where} has the header {header}, expected {HEADER}")
    got = collections.Counter(tuple(row) for row in rows)
    wanted = collections.Counter(tuple(row) for row in run.audience.values())
    if got != wanted:
        missing, unexpected = list((wanted - got).elements()), list((got - wanted).elements())
        raise CheckFailed(f"the data read back{where} differs from what was pushed: "
                          f"{len(missing)} row(s) missing {shown(missing)}, {len(unexpected)} unexpected "
                          f"{shown(unexpected)}")


def csv_rows(reply: Reply) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a 200 CSV answer."""
    if reply.status != 200:
        raise CheckFailed(f"{reply}: HTTP {reply.status}, expected 200 with CSV{error_text(reply)}")
    if reply.content_type != "text/csv":
        raise CheckFailed(f"{reply}: Content-Type {reply.content_type!r}, expected text/csv")
    try:
        text = reply.body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise CheckFailed(f"{reply}: the CSV is not UTF-8") from None
    rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    if not rows:
        raise CheckFailed(f"{reply}: the CSV has no header row")
    return rows[0], rows[1:]


def expect_counts(run: Run, reply: Reply, **counts: str) -> dict[str, Any]:
    """A push's success answer: ``segmentId`` and the counts, all strings, as in the source's examples."""
    result = success_result(reply)
    field(result, "segmentId", lambda value: value == run.segment_id, f'the string "{run.segment_id}"')
    for name, expected in counts.items():
        field(result, name, lambda value, expected=expected: value == expected, f'the string "{expected}"')
    return result


def success_result(reply: Reply) -> dict[str, Any]:
    """The ``result`` of a 200 success envelope; ``CheckFailed`` naming what is wrong."""
    if reply.status != 200:
        raise CheckFailed(f"{reply}: HTTP {reply.status}, expected 200{error_text(reply)}")
    body = reply.json()
    if not isinstance(body, dict):
        raise CheckFailed(f"{reply}: the body is not a JSON object: {reply.body[:100]!r}")
    if body.get("responseStatus") != "success":
        raise CheckFailed(f'{reply}: responseStatus is {body.get("responseStatus", "missing")!r}, expected "success"')
    return field(body, "result", lambda value: isinstance(value, dict), "an object", where=str(reply))


def expect_failure(reply: Reply, status: int) -> dict[str, Any]:
    """The failure envelope with this status: ``{"responseStatus": "failure", "error": {code, message}}``."""
    if reply.status != status:
        raise CheckFailed(f"{reply}: HTTP {reply.status}, expected {status}")
    body = reply.json()
    if not isinstance(body, dict):
        raise CheckFailed(f"{reply}: HTTP {status} without a JSON failure body: {reply.body[:100]!r}")
    if body.get("responseStatus") != "failure":
        raise CheckFailed(f'{reply}: responseStatus is {body.get("responseStatus", "missing")!r}, expected "failure"')
    error = field(body, "error", lambda value: isinstance(value, dict), "an object", where=str(reply))
    field(error, "code", lambda value: is_str(value) and bool(SNAKE_CASE.match(value)), "a snake_case string",
          where=f"{reply}: error")
    field(error, "message", is_str, "a string", where=f"{reply}: error")
    return body


def field(container: Any, name: str, valid: Callable[[Any], bool], expected: str, *, where: str = "result") -> Any:
    if not isinstance(container, dict) or name not in container:
        raise CheckFailed(f"{where}: {name} is missing")
    value = container[name]
    if not valid(value):
        raise CheckFailed(f"{where}: {name} is {value!r} ({type(value).__name__}), expected {expected}")
    return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def digits(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit()


def segment_number(run: Run) -> int | str:
    assert run.segment_id is not None
    return int(run.segment_id) if digits(run.segment_id) else run.segment_id


def attribute_names(result: dict[str, Any]) -> list[Any]:
    return [attribute.get("name") if isinstance(attribute, dict) else attribute
            for attribute in result["segmentAttributes"]]


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def error_text(reply: Reply) -> str:
    body = reply.json()
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f" ({body['error'].get('code')}: {body['error'].get('message')})"
    return ""


def shown(rows: list[tuple[str, ...]]) -> str:
    listed = ", ".join(csv_text(list(row), []).rstrip("\n") for row in sorted(rows)[:MAX_SHOWN])
    return f"[{listed}{', …' if len(rows) > MAX_SHOWN else ''}]"


# -- running it -----------------------------------------------------------------------------------------

async def conformance(options: ConformanceOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run every step against ``options.url``; one line per check and a summary on ``out``; the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    parts = urlsplit(options.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        print(f"audience-gateway conformance: --url must be an http(s) URL, not {options.url!r}", file=err)
        return EXIT_USAGE
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=options.timeout, sock_read=options.timeout)
    started = time.monotonic()
    async with new_session(options.key, options.timeout) as keyed, aiohttp.ClientSession(timeout=timeout) as anonymous:
        run = Run(options, keyed, anonymous)
        outcomes = []
        for each in STEPS:
            outcome = await run_step(run, each)
            print(f"{outcome.status} {outcome.name}{': ' + outcome.reason if outcome.reason else ''}",
                  file=out, flush=True)
            outcomes.append(outcome)
        left = await clean_up(run)
    counts = collections.Counter(outcome.status for outcome in outcomes)
    print(f"{len(outcomes)} checks against {options.url}: {counts[PASS]} passed, {counts[FAIL]} failed, "
          f"{counts[SKIP]} skipped in {time.monotonic() - started:.1f} s", file=out)
    print(f"left behind: {'; '.join(left)}" if left else "cleanup: nothing left behind", file=out)
    if options.junit is not None:
        try:
            write_junit(options.junit, outcomes, options.url)
        except OSError as exc:
            print(f"audience-gateway conformance: cannot write {options.junit}: {exc.strerror}", file=err)
            return EXIT_USAGE
    return EXIT_OK if counts[PASS] == len(outcomes) else EXIT_FAILED


async def run_step(run: Run, each: Step) -> Outcome:
    missing = [need for need in each.needs if getattr(run, need) is None]
    if missing:
        return Outcome(each.name, SKIP, NEEDS[missing[0]], 0.0)
    started = time.monotonic()
    try:
        await each.run(run)
    except CheckFailed as exc:
        return Outcome(each.name, FAIL, str(exc), time.monotonic() - started)
    except Exception as exc:  # an answer shaped so oddly that a check tripped on it: a failure, not a crash
        return Outcome(each.name, FAIL, f"unexpected answer ({describe(exc)})", time.monotonic() - started)
    return Outcome(each.name, PASS, "", time.monotonic() - started)


async def clean_up(run: Run) -> list[str]:
    """Cancel the export jobs and delete the segment where the endpoint allows; what is left, for humans."""
    left, jobs_left = [], []
    for job_id in run.jobs:
        reply = await try_call(run, "DELETE", f"/v1/jobs/{job_id}")
        if reply is None or reply.status != 200:
            jobs_left.append(f"{job_id} ({answer(reply)})")
    if run.segment_id is not None:
        reply = await try_call(run, "DELETE", f"/api/segments/{run.segment_id}", params={"purge": "true"})
        if reply is None or reply.status != 200:
            left.append(f"segment {run.segment_id} {run.name!r} (DELETE /api/segments/{run.segment_id}: "
                        f"{answer(reply)}; the Exchange API has no call to delete a segment)")
    if jobs_left:
        left.append(f"export jobs {', '.join(jobs_left)} (DELETE /v1/jobs/{{id}} cancels a job)")
    return left


async def try_call(run: Run, method: str, path: str, **kwargs: Any) -> Reply | None:
    try:
        return await run.call(method, path, **kwargs)
    except CheckFailed:
        return None


def answer(reply: Reply | None) -> str:
    return "no answer" if reply is None else f"HTTP {reply.status}"


def write_junit(path: Path, outcomes: list[Outcome], url: str) -> None:
    """One testcase per check; a failure or skip carries the reason."""
    counts = collections.Counter(outcome.status for outcome in outcomes)
    suite = ET.Element("testsuite", name="exchange-conformance", tests=str(len(outcomes)),
                       failures=str(counts[FAIL]), skipped=str(counts[SKIP]), errors="0",
                       time=f"{sum(outcome.seconds for outcome in outcomes):.3f}")
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="url", value=url)
    for outcome in outcomes:
        case = ET.SubElement(suite, "testcase", classname="conformance", name=outcome.name,
                             time=f"{outcome.seconds:.3f}")
        if outcome.status == FAIL:
            ET.SubElement(case, "failure", message=outcome.reason).text = outcome.reason
        elif outcome.status == SKIP:
            ET.SubElement(case, "skipped", message=outcome.reason)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
