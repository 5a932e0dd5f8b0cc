"""``audience-gateway pull``: a segment's audience into a file, by the direct route or an export job.

``GET /v1/segments/{id}/data`` first; when the server answers 501 (the audience is too large to serve
directly) an ``ExportSegmentData`` job is created, polled with backoff until it is complete, and its data
downloaded. The file is written as ``FILE.part`` and renamed to FILE once complete.

A download that breaks is tried again (backoff, bounded attempts): from where it stopped when the answer
offered ranges (``Accept-Ranges: bytes`` and a strong ``ETag``, as job data does), with ``If-Range`` so
that a changed representation is sent whole instead; from the start otherwise (the direct route: the
audience may have changed in between). Downloads ask for ``identity``: ranges are over the CSV bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from gateway.client.http import (ClientFailure, Retryable, RetryPolicy, ServerRefused, failure, json_result,
                                 new_session, retrying)
from gateway.client.progress import MB, Progress

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 3
CHUNK_BYTES = 1 << 16
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclasses.dataclass
class PullOptions:
    url: str
    key: str
    segment: str
    output: Path
    retry: RetryPolicy = RetryPolicy()
    timeout: float = 300.0
    poll_max: float = 5.0  # seconds between job polls, at most


@dataclasses.dataclass
class _Transfer:
    """What a resumed attempt needs to know about the previous ones."""

    size: int = 0  # bytes in the .part file
    total: int | None = None  # the whole representation's length, when announced
    etag: str | None = None  # set when the server offers byte ranges for it
    resumed: int = 0  # attempts that continued with a 206


async def pull(options: PullOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one pull; the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    part = options.output.with_name(options.output.name + ".part")
    progress = Progress(f"pull segment {options.segment}", stream=err)
    try:
        async with new_session(options.key, options.timeout) as session:
            puller = _Puller(session, options, progress)
            how, rows = "directly", None
            try:
                transfer = await puller.download(f"/v1/segments/{options.segment}/data", part)
            except ServerRefused as exc:
                if exc.status != 501:
                    raise
                job = await puller.create_job()
                rows = await puller.wait(job)
                how = f"by export job {job['jobId']}"
                transfer = await puller.download(f"/v1/jobs/{job['jobId']}/data/{job['jobDataId']}", part)
        os.replace(part, options.output)
    except ClientFailure as exc:
        progress.note(f"audience-gateway pull: {exc}")
        part.unlink(missing_ok=True)  # nothing resumes it in a later run
        return EXIT_FAILED
    except OSError as exc:
        progress.note(f"audience-gateway pull: cannot write {exc.filename or options.output}: {exc.strerror}")
        return EXIT_USAGE
    progress.finish()
    resumed = f", resumed {transfer.resumed} time(s)" if transfer.resumed else ""
    print(f"segment {options.segment}: {transfer.size / MB:,.1f} MB{f', {rows:,} rows' if rows is not None else ''} "
          f"{how} in {progress.elapsed:.1f} s{resumed} -> {options.output}", file=out)
    return EXIT_OK


class _Puller:
    def __init__(self, session: aiohttp.ClientSession, options: PullOptions, progress: Progress) -> None:
        self.session = session
        self.options = options
        self.progress = progress
        self.base = options.url.rstrip("/")

    async def _call(self, what: str, method: str, path: str, **kwargs: Any) -> Any:
        async def attempt() -> Any:
            async with self.session.request(method, self.base + path, **kwargs) as response:
                return await json_result(response, what)
        return await retrying(what, attempt, self.options.retry, self.progress.note)

    async def create_job(self) -> dict[str, Any]:
        job = await self._call("create export job", "POST", "/v1/jobs",
                               json={"segmentId": self.options.segment, "jobType": "ExportSegmentData"})
        self.progress.note(f"segment {self.options.segment} is too large to serve directly: "
                           f"export job {job['jobId']} created")
        return job

    async def wait(self, job: dict[str, Any]) -> int | None:
        """Poll until the job is complete (its row count); ``ClientFailure`` if it ends otherwise."""
        delay, shown = 0.1, None
        while True:
            status = await self._call(f"export job {job['jobId']}", "GET", f"/v1/jobs/{job['jobId']}")
            if status["status"] != shown:
                shown = status["status"]
                self.progress.note(f"export job {job['jobId']}: {shown}")
            if shown == "complete":
                return status.get("rowCount")
            if shown in ("error", "canceled"):
                reason = f": {status['reason']}" if status.get("reason") else ""
                raise ClientFailure(f"export job {job['jobId']} ended {shown}{reason}")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.options.poll_max)

    async def download(self, path: str, part: Path) -> _Transfer:
        transfer = _Transfer()

        async def attempt() -> None:
            headers = {"Accept-Encoding": "identity"}
            if transfer.etag and transfer.size:
                headers.update({"Range": f"bytes={transfer.size}-", "If-Range": transfer.etag})
            async with self.session.get(self.base + path, headers=headers) as response:
                mode = self._start(response, transfer)
                if mode is None:
                    raise await failure(response, f"GET {path}")
                self.progress.restart_bytes(transfer.size)
                with open(part, mode) as file:
                    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                        file.write(chunk)
                        transfer.size += len(chunk)
                        self.progress.advance(len(chunk))
            if transfer.total is not None and transfer.size != transfer.total:
                raise Retryable(f"the download ended at byte {transfer.size} of {transfer.total}")

        await retrying(f"download {path}", attempt, self.options.retry, self.progress.note)
        return transfer

    def _start(self, response: aiohttp.ClientResponse, transfer: _Transfer) -> str | None:
        """How to open the .part file for this answer ("wb": from the start, "ab": resume); None: a failure."""
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if transfer.etag and match and int(match.group(1)) == transfer.size:
                transfer.total = int(match.group(3))
                transfer.resumed += 1
                self.progress.note(f"resuming at byte {transfer.size}")
                return "ab"
            transfer.etag = None  # a range we did not ask for: start over, without ranges
            raise Retryable("unexpected partial content; starting over")
        if response.status == 416:
            transfer.etag = None
            raise Retryable("range not satisfiable; starting over")
        if response.status != 200:
            return None
        etag = response.headers.get("ETag")
        offers_ranges = response.headers.get("Accept-Ranges") == "bytes" and etag and not etag.startswith("W/")
        transfer.size, transfer.etag = 0, etag if offers_ranges else None
        transfer.total = response.content_length
        self.progress.total_bytes = transfer.total
        return "wb"
