"""Where the time of a push goes: py-spy on the gateway, PostgreSQL's statement log, CPU of each side.

    python3 -m bench.profile [--rows 1000000] [--batches 100] [--concurrency 4] [--hashing] [--add]

Starts a gateway on a fresh embedded PostgreSQL, runs one push as a warm-up, then a measured one with
every statement's duration logged (``log_min_duration_statement = 0``) and, when ``py-spy`` is on the
PATH, the gateway sampled at 200 Hz (``--nonblocking``; a second measured REPLACE, so that the sampling
does not slow the statement timings). Prints the statements by total time, the gateway's hottest
frames, and the CPU seconds used by the gateway and by PostgreSQL (its processes, plus the parallel
workers they reaped) against the wall time. Note that statements waiting for the segment lock count
their wait.

The push is a REPLACE of N rows into a new segment (``--hashing``: one with ``identityHashing: sha256``);
with ``--add``, an ADD of N new rows into a segment loaded (untimed) with N others, as the add scenarios.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import client, data
from bench.common import SQL, Gateway, create_segment, run_psql
from bench.scenarios import ADD_START

TICKS = os.sysconf("SC_CLK_TCK")
LOGGED = re.compile(r"LOG:  duration: ([\d.]+) ms  (?:statement|execute [^:]*): (.*?)(?=\n\S|\Z)", re.S)


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """user + system time of ``pid`` (with ``reaped``: plus that of the children it waited for)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
    return ticks / TICKS


def postgres_cpu_seconds(pgdata: Path) -> float:
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True,
                              text=True).stdout.split()
    total = cpu_seconds(postmaster, reaped=True)
    for pid in children:
        try:
            total += cpu_seconds(int(pid))
        except OSError:  # ended meanwhile
            pass
    return total


def statement_totals(log: str, top: int = 12) -> list[str]:
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for ms, statement in LOGGED.findall(log):
        shape = re.sub(r"\d+", "N", " ".join(statement.split()))[:100]
        totals[shape][0] += 1
        totals[shape][1] += float(ms) / 1000
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])[:top]
    return [f"{seconds:7.2f} s {count:5d}× {shape}" for shape, (count, seconds) in ranked]


def hottest_frames(raw: Path, top: int = 10) -> list[str]:
    """py-spy's raw (collapsed) stacks → the functions where the samples end (self), then the gateway's
    own functions by inclusive share (the request plumbing that every stack shares left out)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)", ")", frame) for frame in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            if "(gateway/" in frame and not re.search(r"\(gateway/(cli|__main__|middleware)\.py", frame):
                inclusive[frame] += int(count)
    return ([f"self {100 * n / total:5.1f} % {frame}" for frame, n in own.most_common(top)]
            + [f"incl {100 * n / total:5.1f} % {frame}" for frame, n in inclusive.most_common(top)])


async def prepare(session: aiohttp.ClientSession, gateway: Gateway, args: argparse.Namespace) -> str:
    """The segment a measured push goes to (see the module docstring), loaded untimed for ``--add``."""
    extra = {"identityHashing": "sha256"} if args.hashing else {}
    segment_id = await create_segment(session, gateway.url, "profile", **extra)
    if args.add:
        await client.push_stream(session, gateway.url, segment_id, args.rows, seed=1)
    return segment_id


async def push(session: aiohttp.ClientSession, gateway: Gateway, args: argparse.Namespace, segment_id: str,
               batches: list[tuple[int, bytes]]) -> float:
    """One measured push into ``segment_id``: its wall seconds."""
    started = time.perf_counter()
    await client.push_batches(session, gateway.url, segment_id, "POST" if args.add else "PUT", batches,
                              len(batches), args.concurrency)
    return time.perf_counter() - started


async def profile(args: argparse.Namespace, work: Path) -> None:
    rows = data.rows(args.rows, seed=2, start=ADD_START) if args.add else data.rows(args.rows, seed=1)
    batches = data.batches(list(rows), math.ceil(args.rows / args.batches))
    gateway = Gateway(work / "data")
    pgdata, dsn = work / "data" / "pg", gateway.dsn()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            warm_up = await push(session, gateway, args, await prepare(session, gateway, args), batches)
            print(f"warm-up push: {warm_up:.2f} s")
            segment_id = await prepare(session, gateway, args)
            run_psql(dsn, SQL["log_statements_on"], SQL["reload_configuration"])
            time.sleep(0.5)
            log_start = (pgdata / "server.log").stat().st_size
            before = cpu_seconds(gateway.pid), postgres_cpu_seconds(pgdata)
            wall = await push(session, gateway, args, segment_id, batches)
            gateway_cpu, postgres_cpu = cpu_seconds(gateway.pid) - before[0], postgres_cpu_seconds(pgdata) - before[1]
            run_psql(dsn, SQL["log_statements_off"], SQL["reload_configuration"])
            with (pgdata / "server.log").open() as log:
                log.seek(log_start)
                statements = statement_totals(log.read())
            print(f"measured {'ADD' if args.add else 'REPLACE'} of {args.rows:,} rows: {wall:.2f} s wall, "
                  f"gateway CPU {gateway_cpu:.2f} s, PostgreSQL CPU {postgres_cpu:.2f} s")
            print("statements by total time (summed over connections):", *statements, sep="\n  ")
            spy = shutil.which("py-spy")
            if not spy:
                print("py-spy is not installed: no gateway profile (python3 -m pip install py-spy)")
                return
            raw = work / "push.raw"
            segment_id = await prepare(session, gateway, args)
            sampler = subprocess.Popen([spy, "record", "--pid", str(gateway.pid), "--rate", "200", "--nonblocking",
                                        "--format", "raw", "-o", str(raw)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            wall = await push(session, gateway, args, segment_id, batches)
            sampler.send_signal(signal.SIGINT)
            sampler.wait(60)
            print(f"the push under py-spy: {wall:.2f} s; share of the gateway's busy samples:",
                  *hottest_frames(raw), sep="\n  ")
    finally:
        gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--hashing", action="store_true", help="into a segment with identityHashing sha256")
    parser.add_argument("--add", action="store_true", help="ADD N new rows into an N-member segment")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        asyncio.run(profile(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
