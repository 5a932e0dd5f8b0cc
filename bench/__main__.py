"""Benchmark the gateway: each scenario beside its anchors (keyed ``psql \\copy``, the naive peer).

    python3 -m bench [--rows 1000000] [--repeats 1] [--scenarios replace,add,…] [--out bench/results]

Starts a real gateway (``python -m gateway serve``) on a fresh embedded PostgreSQL in a temporary
directory and runs the chosen scenarios in order (see bench/scenarios.py). Writes
``OUT/bench-<time>.json`` (every figure, the options, the machine), prints a table, and draws
``OUT/bench-<time>-throughput.png`` and ``…-rss.png`` when matplotlib is installed (the ``[bench]``
extra). Ratios are gateway time / psql time: lower is better.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import report, scenarios
from bench.common import Gateway, machine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="N: the scenarios' size (default 1M)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per measurement; the median is reported")
    parser.add_argument("--scenarios", default=",".join(scenarios.SCENARIOS),
                        help=f"comma-separated, in order (default all: {','.join(scenarios.SCENARIOS)})")
    parser.add_argument("--batches", type=int, default=100, help="batches per push (default 100)")
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight (default 4)")
    parser.add_argument("--naive-cap", type=float, default=300,
                        help="seconds after which the naive peer gets no new batch (default 300)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes of the gateway under test (serve --workers; default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in args.scenarios if name not in scenarios.SCENARIOS]
    if unknown or args.rows < 10 or args.repeats < 1 or args.batches < 1 or args.concurrency < 1:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}" if unknown else
                     "--rows must be ≥ 10, --repeats, --batches and --concurrency ≥ 1")
    return args


async def run(args: argparse.Namespace, work: Path) -> dict:
    gateway = Gateway(work / "data", workers=args.workers)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            bench = scenarios.Run(args, work, gateway, session)
            facts = machine(bench.dsn)
            figures = {}
            try:
                for name in args.scenarios:
                    print(f"{time.strftime('%H:%M:%S')} {name} …", file=sys.stderr, flush=True)
                    figures[name] = await scenarios.SCENARIOS[name](bench)
            finally:
                if bench.naive:
                    bench.naive.stop()
    finally:
        gateway.stop()
    options = {key: value for key, value in vars(args).items() if key != "out"}
    return {"command": " ".join(["python3", "-m", "bench", *sys.argv[1:]]), "options": options,
            "machine": facts, "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "scenarios": figures}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("bench-%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        figures = asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["started"] = stamp
    path = args.out / f"{stamp}.json"
    report.write_json(path, figures)
    print(report.table(figures))
    charts = report.charts(figures, args.out, stamp)
    print(f"figures: {path}", file=sys.stderr)
    if charts:
        print(f"charts: {', '.join(str(c) for c in charts)}", file=sys.stderr)
    else:
        print("charts skipped: matplotlib is not installed (pip install '.[bench]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
