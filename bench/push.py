"""Push benchmark: REPLACE and ADD of N rows in Exchange batches, against psql \\copy in the same run.

    python3 -m bench.push --rows 1000000 [--batch-rows 10000] [--concurrency 4] [--stream-rows 10000000]

Starts the gateway (``python -m gateway serve``) on a fresh embedded PostgreSQL in a temporary data
dir, loads the same rows with ``psql \\copy`` into a table with a text primary key on that server, and
prints the ratios (gateway time / psql time: lower is better). Also measures the gateway's peak RSS
while one request streams ``--stream-rows`` rows generated on the fly, and the latency of
``GET /v1/segments`` while the REPLACE push runs. Writes every figure to bench/results/push-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import data
from bench.common import AUTH, Gateway, RssSampler, create_segment, machine, psql, timed_psql

async def push_batches(session: aiohttp.ClientSession, url: str, segment_id: str, method: str,
                       bodies: list[bytes], concurrency: int) -> tuple[float, dict]:
    """Send every batch (numbered 1..T) with ``concurrency`` in flight; returns (seconds, last result)."""
    total = len(bodies)
    queue = list(enumerate(bodies, start=1))
    results: dict[int, dict] = {}

    async def worker() -> None:
        while queue:
            number, body = queue.pop(0)
            params = {"totalBatchCount": str(total), "currentBatchNumber": str(number)}
            async with session.request(method, f"{url}/v1/segments/{segment_id}/data", params=params,
                                       data=body, headers={**AUTH, "Content-Type": "text/csv"}) as response:
                payload = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"batch {number}: {response.status} {payload}")
                results[number] = payload["result"]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    committed = [r for r in results.values() if r.get("replaceCommitted")]
    return elapsed, (committed[0] if committed else results[total])


async def latency_probe(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[float]:
    samples = []
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(f"{url}/v1/segments", headers=AUTH) as response:
            await response.read()
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return samples


def psql_copy_seconds(gateway_data_dir: Path, csv_path: Path) -> float:
    """``psql \\copy`` of the file into a fresh table with a text primary key, on the gateway's server."""
    subprocess.run([*psql(gateway_data_dir), "-c", "SET client_min_messages = warning; DROP TABLE IF EXISTS "
                    "bench_anchor; CREATE TABLE bench_anchor (email text PRIMARY KEY, first_name text, "
                    "last_name text, sex text)"], check=True)
    return timed_psql(gateway_data_dir, f"\\copy bench_anchor FROM '{csv_path}' WITH (FORMAT csv, HEADER true)")


async def stream_one_request(gateway: Gateway, session: aiohttp.ClientSession, rows: int) -> dict:
    """One REPLACE request of ``rows`` rows generated on the fly; samples the gateway's RSS meanwhile."""
    segment_id = await create_segment(session, gateway.url, "stream")

    async def body():
        yield data.HEADER.encode()
        chunk: list[str] = []
        for line in data.rows(rows, seed=3, start=50_000_000):
            chunk.append(line)
            if len(chunk) == 5000:
                yield "".join(chunk).encode()
                chunk = []
        if chunk:
            yield "".join(chunk).encode()

    started = time.perf_counter()
    async with RssSampler(gateway) as rss:
        async with session.put(f"{gateway.url}/v1/segments/{segment_id}/data", data=body(),
                               headers={**AUTH, "Content-Type": "text/csv"}) as response:
            result = await response.json()
    return {"rows": rows, "seconds": round(time.perf_counter() - started, 2), "status": response.status,
            "audienceSize": result.get("result", {}).get("audienceSize"), **rss.figures()}


async def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-push-"))
    print(f"generating {args.rows} rows in {work} …", file=sys.stderr)
    csv_path = data.write_csv(work / "replace.csv", args.rows, seed=1)
    replace_bodies = data.batches(args.rows, args.batch_rows, seed=1)
    add_bodies = data.batches(args.rows, args.batch_rows, seed=2, start=10_000_000)
    gateway = Gateway(work / "data")
    figures: dict = {"rows": args.rows, "batch_rows": args.batch_rows, "concurrency": args.concurrency}
    try:
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            psql_seconds = [psql_copy_seconds(gateway.data_dir, csv_path) for _ in range(args.repeats)]
            figures["psql_copy_keyed_s"] = round(statistics.median(psql_seconds), 3)

            replace_runs, add_runs, latencies = [], [], []
            for repeat in range(args.repeats):
                segment_id = await create_segment(session, gateway.url, f"replace-{repeat}")
                stop = asyncio.Event()
                probe = asyncio.create_task(latency_probe(session, gateway.url, stop))
                seconds, result = await push_batches(session, gateway.url, segment_id, "PUT", replace_bodies,
                                                     args.concurrency)
                stop.set()
                latencies += await probe
                assert result["audienceSize"] == args.rows, result
                replace_runs.append(seconds)
                seconds, _ = await push_batches(session, gateway.url, segment_id, "POST", add_bodies,
                                                args.concurrency)
                add_runs.append(seconds)
            figures["replace_s"] = round(statistics.median(replace_runs), 3)
            figures["add_s"] = round(statistics.median(add_runs), 3)
            figures["replace_vs_psql"] = round(figures["replace_s"] / figures["psql_copy_keyed_s"], 2)
            figures["add_vs_psql"] = round(figures["add_s"] / figures["psql_copy_keyed_s"], 2)
            latencies.sort()
            figures["get_segments_during_push_ms"] = {
                "samples": len(latencies),
                "p50": round(1000 * latencies[len(latencies) // 2], 1),
                "p99": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1)}
            if args.stream_rows:
                figures["stream_one_request"] = await stream_one_request(gateway, session, args.stream_rows)
    finally:
        gateway.stop()
    figures["machine"] = machine()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--stream-rows", type=int, default=0, help="rows in the one-request RSS test (0: skip)")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"push-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(figures, indent=2))
    summary = {k: v for k, v in figures.items() if k not in ("machine",)}
    if "stream_one_request" in summary:
        summary["stream_one_request"] = {k: v for k, v in summary["stream_one_request"].items()
                                         if k != "rss_series_mb"}
    print(json.dumps(summary, indent=2))
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
