"""The benchmark's HTTP client side: Exchange-style pushes, the export job flow, a latency probe."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator

import aiohttp

from bench import data
from bench.common import AUTH

CURL = shutil.which("curl")
CSV = {**AUTH, "Content-Type": "text/csv"}


async def push_batches(session: aiohttp.ClientSession, url: str, segment_id: str, method: str,
                       batches: list[tuple[int, bytes]], total: int, concurrency: int,
                       *, deadline: float | None = None, auth: dict[str, str] = AUTH) -> list[dict]:
    """Send the numbered batches of a ``total``-batch push with ``concurrency`` in flight, in order;
    no new batch starts after ``deadline`` (a ``time.perf_counter()`` value). Returns the results.
    ``auth``: the headers of another endpoint's key (default: the bench's own)."""
    headers = {**auth, "Content-Type": "text/csv"}
    queue = list(batches)
    results: list[dict] = []

    async def worker() -> None:
        while queue and (deadline is None or time.perf_counter() < deadline):
            number, body = queue.pop(0)
            params = {"totalBatchCount": str(total), "currentBatchNumber": str(number)}
            async with session.request(method, f"{url}/v1/segments/{segment_id}/data", params=params,
                                       data=body, headers=headers) as response:
                payload = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"{method} batch {number}: {response.status} {payload}")
                results.append(payload["result"])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def push_stream(session: aiohttp.ClientSession, url: str, segment_id: str, rows: int, *,
                      seed: int, start: int = 0, body: AsyncIterator[bytes] | None = None) -> dict:
    """One REPLACE request of ``rows`` rows generated while it is sent (``body``: other rows than
    ``data.stream``'s); returns its result."""
    body = data.stream(rows, seed=seed, start=start) if body is None else body
    async with session.put(f"{url}/v1/segments/{segment_id}/data", headers=CSV, data=body) as response:
        payload = await response.json()
        if response.status != 200 or payload["result"].get("numReceived") != str(rows):
            raise RuntimeError(f"streamed REPLACE of {rows} rows: {response.status} {payload}")
        return payload["result"]


async def latency_probe(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[float]:
    """``GET /v1/segments`` every 10 ms until ``stop``; the seconds each call took."""
    samples = []
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(f"{url}/v1/segments", headers=AUTH) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET /v1/segments: {response.status}")
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return samples


async def job_flow(session: aiohttp.ClientSession, url: str, segment_id: str) -> dict:
    """Create an export job, wait for it, download it: seconds of each step and the bytes received."""
    started = time.perf_counter()
    async with session.post(f"{url}/v1/jobs", json={"segmentId": segment_id, "jobType": "ExportSegmentData"},
                            headers=AUTH) as response:
        job = (await response.json())["result"]
    while True:
        async with session.get(f"{url}/v1/jobs/{job['jobId']}", headers=AUTH) as response:
            status = (await response.json())["result"]["status"]
        if status == "complete":
            break
        if status not in ("waiting", "running"):
            raise RuntimeError(f"export job ended {status}")
        await asyncio.sleep(0.05)
    ready = time.perf_counter()
    received = await download(session, f"{url}/v1/jobs/{job['jobId']}/data/{job['jobDataId']}")
    return {"job_s": ready - started, "download_s": time.perf_counter() - ready, "bytes": received}


async def download(session: aiohttp.ClientSession, url: str) -> int:
    """Bytes of the body. curl when installed: a Python client on the same cores would be the
    bottleneck and measure itself rather than the gateway."""
    if CURL:
        process = await asyncio.create_subprocess_exec(
            CURL, "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", "-H",
            f"Authorization: {AUTH['Authorization']}", url, stdout=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
        if process.returncode:
            raise RuntimeError(f"curl exited {process.returncode}")
        return int(float(out))
    received = 0
    async with session.get(url, headers=AUTH) as response:
        async for chunk in response.content.iter_chunked(1 << 20):
            received += len(chunk)
    return received


async def segment_job_flow(session: aiohttp.ClientSession, url: str, definition_id: str) -> dict:
    """POST a segment job of the definition and poll it until it has SUCCEEDED: the seconds it took and
    the job as it ended."""
    started = time.perf_counter()
    async with session.post(f"{url}/api/segment/jobs", json={"segments": [{"segmentId": definition_id}]},
                            headers=AUTH) as response:
        job = (await response.json())["result"]
    while True:
        async with session.get(f"{url}/api/segment/jobs/{job['id']}", headers=AUTH) as response:
            job = (await response.json())["result"]
        if job["status"] == "SUCCEEDED":
            return {"seconds": time.perf_counter() - started, "job": job}
        if job["status"] not in ("QUEUED", "PROCESSING"):
            raise RuntimeError(f"segment job ended {job['status']}: {job['errors']}")
        await asyncio.sleep(0.02)

async def erase_flow(session: aiohttp.ClientSession, url: str, identities: list[str],
                     auth: dict[str, str] = AUTH) -> tuple[float, dict]:
    """``POST /api/privacy/erase`` of a JSON list, then its status polled every 10 ms until it ends:
    (seconds from the request to the end seen, the erasure as answered last). ``auth``: as push_batches."""
    started = time.perf_counter()
    async with session.post(f"{url}/api/privacy/erase", json={"identities": identities}, headers=auth) as response:
        job = (await response.json())["result"]
    while True:
        async with session.get(f"{url}/api/privacy/erase/{job['id']}", headers=auth) as response:
            result = (await response.json())["result"]
        if result["status"] in ("SUCCEEDED", "FAILED"):
            break
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - started
    if result["status"] != "SUCCEEDED":
        raise RuntimeError(f"erasure {job['id']} failed: {result}")
    return seconds, result


async def export_file_flow(session: aiohttp.ClientSession, url: str, segment_id: str, file_format: str) -> dict:
    """Create an export job to a file (``/api/export/jobs``) and wait until its file is written: seconds, and
    the job's answer."""
    started = time.perf_counter()
    payload = {"filter": {"segments": [{"segmentId": segment_id}]}, "format": file_format}
    async with session.post(f"{url}/api/export/jobs", json=payload, headers=AUTH) as response:
        job = (await response.json())["result"]
    while job["status"] in ("NEW", "PROCESSING"):
        await asyncio.sleep(0.05)
        async with session.get(f"{url}/api/export/jobs/{job['id']}", headers=AUTH) as response:
            job = (await response.json())["result"]
    if job["status"] != "SUCCEEDED":
        raise RuntimeError(f"export file job ended {job['status']}: {job['errors']}")
    return {"seconds": time.perf_counter() - started, "job": job}
