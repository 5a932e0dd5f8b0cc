"""``audience-gateway push FILE``: send a CSV file of any size to a segment as Exchange-style batches.

The file is read twice (``gateway.client.batches``): once to count its records, so that every batch
carries ``totalBatchCount``, and once to cut it into batches that are sent as they are cut. Batches cannot
go out during the count: the first one already needs ``totalBatchCount``, i.e. the whole file counted; so
the count is made fast instead (quote-free lines counted from their bytes). At most
``concurrency`` batches are being sent (or retried) at any time, and the next one is read ahead meanwhile.

Batches are idempotent, so any failure that may be transient (a connection error, 429, 5xx) is retried
with backoff; another 4xx stops the push at once (exit 3) with the server's error.

Order and concurrency: REPLACE batches may arrive in any order (the server keeps, for an identity in
several batches, the row of the highest batch number, i.e. the file's last row). REMOVE does not depend on
order. ADD batches sent in parallel are applied in the order they finish streaming, so when one identity
appears in several batches with different attributes, which of them wins is not defined: use
``--concurrency 1`` when that matters (within a batch the last row always wins).

Each run uses its own REPLACE session (``sourceSegmentID`` defaults to a fresh id), so that a run never
joins a session an earlier, unfinished run left open.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import shlex
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from gateway.client.batches import MAX_SAMPLES, FileProblem, Plan, cut, fold_name, read_header, scan
from gateway.client.http import ClientFailure, RetryPolicy, json_result, new_session, retrying
from gateway.client.progress import MB, Progress

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
METHOD_OF = {"add": "POST", "replace": "PUT", "remove": "DELETE"}
CSV = {"Content-Type": "text/csv; charset=utf-8"}


@dataclasses.dataclass
class PushOptions:
    url: str
    key: str
    path: Path
    segment: str | None = None  # or create:
    create: str | None = None
    mode: str = "add"
    batch_rows: int = 10_000
    concurrency: int = 4
    ids: str | None = None
    strict: bool = False
    source_endpoint: str = "audience-gateway-push"
    source_segment: str | None = None  # None: a fresh id for this run
    retry: RetryPolicy = RetryPolicy()
    timeout: float = 300.0


@dataclasses.dataclass
class Totals:
    """The server's answers, summed over the batches."""

    received: int = 0
    invalid: int = 0
    added: int = 0
    removed: int = 0
    samples: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    committed: bool = False
    audience_size: int | None = None

    def add(self, result: dict[str, Any]) -> None:
        self.received += int(result.get("numReceived", 0))
        self.invalid += int(result.get("numInvalid", 0))
        self.added += int(result.get("numAdded", 0))
        self.removed += int(result.get("numRemoved", 0))
        for sample in result.get("invalidSamples", []):  # numbered by the file's lines (firstLine)
            self.samples.append((int(sample["line"]), str(sample["reason"])))
        if result.get("replaceCommitted"):
            self.committed, self.audience_size = True, result.get("audienceSize")


async def push(options: PushOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one push; the exit code.

    Fails fast, in this order: the file's header (read alone: a file that cannot be pushed is exit 2 before
    any request), then the key and the segment (one cheap call: exit 3 before the file is read), then the
    count (``--strict`` parses every record; otherwise quote-free lines are counted from their bytes).
    """
    out, err = out or sys.stdout, err or sys.stderr
    started = time.monotonic()
    try:
        header = await asyncio.to_thread(read_header, options.path)
    except FileProblem as exc:
        print(f"audience-gateway push: {exc}", file=err)
        return EXIT_USAGE
    if options.ids and fold_name(options.ids) not in {fold_name(name) for name in header}:
        print(f"audience-gateway push: --ids {options.ids!r} is not a column of {options.path} "
              f"({', '.join(header)})", file=err)
        return EXIT_USAGE

    client: _Pusher | None = None
    plan: Plan | None = None
    try:
        async with new_session(options.key, options.timeout) as session:
            client = _Pusher(session, options, Progress(f"push {options.path.name}", stream=err))
            await client.preflight()
            try:
                plan = await _count(options, err)
            except FileProblem as exc:
                print(f"audience-gateway push: {exc}", file=err)
                return EXIT_USAGE
            if options.strict and plan.invalid:
                print(f"audience-gateway push: {plan.invalid} invalid row(s) in {options.path}; nothing was "
                      "sent (--strict)", file=err)
                _print_samples(plan.invalid_samples, err)
                return EXIT_INVALID
            client.start(plan)
            segment_id = options.segment if options.segment is not None else await client.create_segment()
            totals = await client.send_all(segment_id)
    except ClientFailure as exc:
        assert client is not None
        client.progress.note(f"audience-gateway push: {exc}")
        if plan is not None and client.applied:
            client.progress.note(f"{client.applied} of {plan.total} batch(es) had been accepted"
                                 + ("; the REPLACE was not committed" if options.mode == "replace" else ""))
        return EXIT_FAILED
    except FileProblem as exc:
        assert client is not None
        client.progress.note(f"audience-gateway push: {exc}")
        return EXIT_USAGE
    assert plan is not None
    client.progress.finish()
    _summary(options, plan, segment_id, totals, client.progress.elapsed, time.monotonic() - started, out,
             source_segment=client.params["sourceSegmentID"])
    if options.mode == "replace" and not totals.committed:
        print("audience-gateway push: every batch was sent but the server did not report the REPLACE as "
              "committed", file=err)
        return EXIT_FAILED
    return EXIT_INVALID if options.strict and totals.invalid else EXIT_OK


async def _count(options: PushOptions, err: TextIO) -> Plan:
    progress = Progress(f"count {options.path.name}", stream=err)
    stop = threading.Event()  # a thread cannot be cancelled: it checks this between chunks

    def on_chunk(nbytes: int) -> None:
        if stop.is_set():
            raise FileProblem("interrupted")
        progress.advance(nbytes)

    try:
        plan = await asyncio.to_thread(scan, options.path, options.batch_rows, on_chunk,
                                       check_rows=options.strict)
    except asyncio.CancelledError:
        stop.set()
        raise
    progress.rows = plan.records
    progress.finish()
    return plan


class _Pusher:
    def __init__(self, session: aiohttp.ClientSession, options: PushOptions, progress: Progress) -> None:
        self.session = session
        self.options = options
        self.progress = progress  # until start(): only for notes
        self.base = options.url.rstrip("/")
        self.totals = Totals()
        self.applied = 0  # batches the server accepted
        self.plan = Plan(header=[], starts=[], records=0, batch_rows=options.batch_rows, bytes=0)
        self.params: dict[str, str] = {}

    def start(self, plan: Plan) -> None:
        """The file is counted: sending (and its progress) starts."""
        options = self.options
        self.plan = plan
        self.progress = Progress(f"push {options.path.name}", total_rows=plan.records, stream=self.progress.stream)
        self.params = {"totalBatchCount": str(plan.total), "shareAction": options.mode.upper(),
                       "sourceEndpointID": options.source_endpoint,
                       "sourceSegmentID": options.source_segment or f"push-{uuid.uuid4().hex[:16]}"}
        if options.ids:
            self.params["ids"] = options.ids

    async def _call(self, what: str, method: str, path: str, body: bytes | None = None, **kwargs: Any) -> Any:
        async def attempt() -> Any:
            data = io.BytesIO(body) if body is not None else None  # anew for each attempt
            async with self.session.request(method, self.base + path, data=data, **kwargs) as response:
                return await json_result(response, what)
        return await retrying(what, attempt, self.options.retry, self.progress.note)

    async def create_segment(self) -> str:
        """``POST /v1/segments`` with an Idempotency-Key, so that a retried creation makes one segment."""
        key = {"Idempotency-Key": f"push-{uuid.uuid4()}"}
        result = await self._call("create segment", "POST", "/v1/segments", json={"name": self.options.create},
                                  headers=key)
        self.progress.note(f"created segment {result['segmentId']} ({self.options.create})")
        return str(result["segmentId"])

    async def preflight(self) -> None:
        """One cheap call before the file is read: a wrong key (401), an unknown segment (404) or a key of
        another endpoint fails here at once, not after the count. (A read-scope key passes: its 403 comes
        with the first batch.)"""
        if self.options.segment is None:
            await self._call("list segments", "GET", "/v1/segments")
        else:
            await self._call(f"segment {self.options.segment}", "GET", f"/v1/segments/{self.options.segment}")

    async def send_all(self, segment_id: str) -> Totals:
        slots = asyncio.Semaphore(self.options.concurrency)
        bodies = cut(self.options.path, self.plan)
        try:
            async with asyncio.TaskGroup() as group:
                for number in range(1, self.plan.total + 1):
                    body = await asyncio.to_thread(next, bodies, None)  # read ahead while the slots are busy
                    if body is None:
                        raise FileProblem(f"{self.options.path} changed while it was being sent")
                    await slots.acquire()
                    group.create_task(self._send(segment_id, number, body, slots))
        except BaseExceptionGroup as group:
            raise _first(group) from None
        finally:
            bodies.close()  # closes the file
        return self.totals

    async def _send(self, segment_id: str, number: int, body: bytes, slots: asyncio.Semaphore) -> None:
        try:
            params = {**self.params, "currentBatchNumber": str(number)}
            if self.plan.starts:  # the server then numbers rejected rows by the file's lines
                params["firstLine"] = str(self.plan.starts[number - 1])
            result = await self._call(f"batch {number}/{self.plan.total}", METHOD_OF[self.options.mode],
                                      f"/v1/segments/{segment_id}/data", body, headers=CSV, params=params)
            self.totals.add(result)
            self.applied += 1
            self.progress.advance(len(body), self.plan.rows_in(number))
        finally:
            slots.release()


def _first(group: BaseExceptionGroup) -> BaseException:
    """The failure to report from a task group: ours before anything else."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first(exc)
        if isinstance(exc, (ClientFailure, FileProblem)):
            return exc
    return group.exceptions[0]


def _summary(options: PushOptions, plan: Plan, segment_id: str, totals: Totals, sending: float, total: float,
             out: TextIO, *, source_segment: str) -> None:
    rate = plan.bytes / MB / max(sending, 1e-9)
    print(f"segment {segment_id}: {options.mode.upper()} of {options.path} in {plan.total} batch(es): "
          f"{plan.records:,} rows ({plan.bytes / MB:,.1f} MB) in {total:.1f} s (counting {total - sending:.1f} s, "
          f"sending {sending:.1f} s at {rate:,.1f} MB/s)", file=out)
    counts = f"received {totals.received}, invalid {totals.invalid}, " + (
        f"removed {totals.removed}" if options.mode == "remove" else f"added {totals.added}")
    if totals.committed:
        counts += f"; REPLACE committed, audience size {totals.audience_size}"
    print(counts, file=out)
    if totals.received != plan.records:
        print(f"note: the server received {totals.received} rows, the file has {plan.records}", file=out)
    _print_samples(sorted(totals.samples)[:MAX_SAMPLES], out)
    if totals.invalid:
        print(f"every rejected row (CSV line,reason,raw,upload): "
              f"{rejects_command(options.url, segment_id, source_segment)}", file=out)


def rejects_command(url: str, segment_id: str, source_segment: str) -> str:
    """A shell command that fetches every rejected row of this push (``$KEY``: the key it was made with).

    By ``sourceSegmentID``: every run has its own unless ``--source-segment`` names one, and then the
    rejects of earlier runs with it come too (their ``upload`` column tells them apart)."""
    query = urllib.parse.urlencode({"sourceSegmentID": source_segment})
    url = f"{url.rstrip('/')}/api/segments/{urllib.parse.quote(segment_id, safe='')}/rejects?{query}"
    return f'curl -sS --compressed -H "Authorization: Bearer $KEY" {shlex.quote(url)}'


def _print_samples(samples: list[tuple[int, str]], out: TextIO) -> None:
    if samples:
        print(f"invalid rows (first {len(samples)}):", file=out)
    for line, reason in samples:
        print(f"  line {line}: {reason}", file=out)
