"""Export benchmark: the job flow against ``psql \\copy (SELECT …) TO`` of the same rows, in the same run.

    python3 -m bench.export --rows 1000000 [--repeats 3] [--big-rows 10000000]

Loads N rows into a segment (one streamed REPLACE), then for each repeat: ``psql \\copy (SELECT attrs[1],
…) TO file`` (the anchor), and the Exchange job flow: POST /v1/jobs, poll until complete, download the data.
Throughput ratio = psql seconds / download seconds (higher is better; the target is ≥ 0.8). With
``--big-rows`` also samples the gateway's RSS while a job of that many rows is downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import data
from bench.common import AUTH, Gateway, RssSampler, create_segment, machine, timed_psql

CURL = shutil.which("curl")


async def load(session: aiohttp.ClientSession, gateway: Gateway, rows: int) -> str:
    """A segment of ``rows`` members, loaded by one streamed REPLACE request."""
    segment_id = await create_segment(session, gateway.url, f"export-{rows}")

    async def body():
        yield data.HEADER.encode()
        lines: list[str] = []
        for line in data.rows(rows, seed=7):
            lines.append(line)
            if len(lines) == 5000:
                yield "".join(lines).encode()
                lines = []
        if lines:
            yield "".join(lines).encode()

    async with session.put(f"{gateway.url}/v1/segments/{segment_id}/data", data=body(),
                           headers={**AUTH, "Content-Type": "text/csv"}) as response:
        result = await response.json()
        assert response.status == 200 and result["result"]["audienceSize"] == rows, result
    return segment_id


async def job_flow(session: aiohttp.ClientSession, url: str, segment_id: str) -> dict:
    """Create an export job, wait for it, download it; seconds for each step and the bytes received."""
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
            raise RuntimeError(f"job ended {status}")
        await asyncio.sleep(0.05)
    ready = time.perf_counter()
    received = await download(session, f"{url}/v1/jobs/{job['jobId']}/data/{job['jobDataId']}")
    done = time.perf_counter()
    return {"job_s": ready - started, "download_s": done - ready, "bytes": received}


async def download(session: aiohttp.ClientSession, url: str) -> int:
    """Bytes of the body. curl when installed: a Python client on the same 2 cores would be the
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


async def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    gateway = Gateway(work / "data")
    figures: dict = {"rows": args.rows, "download_client": "curl" if CURL else "aiohttp"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            print(f"loading {args.rows} rows …", file=sys.stderr)
            segment_id = await load(session, gateway, args.rows)
            columns = ", ".join(f"attrs[{i}]" for i in range(1, 5))
            anchor, flows = [], []
            for _ in range(args.repeats):
                anchor.append(timed_psql(gateway.data_dir, f"\\copy (SELECT {columns} FROM audience.members_"
                                                           f"{int(segment_id)}) TO '{work / 'psql.csv'}' CSV"))
                flows.append(await job_flow(session, gateway.url, segment_id))
            figures["psql_copy_to_s"] = round(statistics.median(anchor), 3)
            figures["job_s"] = round(statistics.median(f["job_s"] for f in flows), 3)
            figures["download_s"] = round(statistics.median(f["download_s"] for f in flows), 3)
            figures["download_mb"] = round(flows[0]["bytes"] / 2**20, 1)
            figures["download_vs_psql_throughput"] = round(figures["psql_copy_to_s"] / figures["download_s"], 2)
            figures["end_to_end_vs_psql_throughput"] = round(
                figures["psql_copy_to_s"] / (figures["job_s"] + figures["download_s"]), 2)
            if args.big_rows:
                print(f"loading {args.big_rows} rows for the memory test …", file=sys.stderr)
                big = await load(session, gateway, args.big_rows)
                async with RssSampler(gateway) as rss:
                    flow = await job_flow(session, gateway.url, big)
                figures["big_export"] = {"rows": args.big_rows, "job_s": round(flow["job_s"], 2),
                                         "download_s": round(flow["download_s"], 2), **rss.figures()}
    finally:
        gateway.stop()
    figures["machine"] = machine()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-rows", type=int, default=0, help="rows of the RSS test export (0: skip)")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"export-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(figures, indent=2))
    shown = {k: v for k, v in figures.items() if k != "machine"}
    if "big_export" in shown:
        shown["big_export"] = {k: v for k, v in shown["big_export"].items() if k != "rss_series_mb"}
    print(json.dumps(shown, indent=2))
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
