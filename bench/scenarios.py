"""The scenarios: each measures the gateway and, in the same run, its anchors; returns its figures.

Sizes scale with ``--rows`` (N): replace, add, export, latency, two-serve and push use N rows, remove
N/10, big 10·N in one request. Pushes go in ``--batches`` batches (100 × 10k at N = 1M) with
``--concurrency`` in flight, as Exchange sends them. Times are medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import re
import statistics
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bench import anchors, client, data
from bench.common import AUTH, KEY, SQL, Gateway, RssSampler, create_segment, new_endpoint, run_psql, timed_psql

ATTRIBUTES = len(data.HEADER.split(","))
ADD_START = 10_000_000  # ADD's new identities are numbered from here, the big request's from 50M
BIG_START = 50_000_000


class Run:
    """One benchmark run: its options, scratch dir, gateway, HTTP session and generated data."""

    def __init__(self, args: argparse.Namespace, work: Path, gateway: Gateway,
                 session: aiohttp.ClientSession) -> None:
        self.args, self.work, self.gateway, self.session = args, work, gateway, session
        self.rows: int = args.rows
        self.batch_rows = max(1, math.ceil(self.rows / args.batches))
        self.dsn = gateway.dsn()
        self.naive: anchors.NaivePeer | None = None
        self._lines: dict[tuple[int, int, int], list[str]] = {}

    def lines(self, count: int, seed: int, start: int = 0) -> list[str]:
        key = (count, seed, start)
        if key not in self._lines:
            self._lines[key] = list(data.rows(count, seed=seed, start=start))
        return self._lines[key]

    def csv(self, name: str, lines: list[str]) -> Path:
        path = self.work / f"{name}.csv"
        return path if path.exists() else data.write_csv(path, lines)

    async def segment(self, name: str, *, load: int = 0, seed: int = 1) -> str:
        """A new segment, loaded (untimed) with ``load`` rows by one streamed REPLACE."""
        segment_id = await create_segment(self.session, self.gateway.url, name)
        if load:
            await self.load(self.gateway.url, segment_id, load, seed=seed)
        return segment_id

    async def load(self, url: str, segment_id: str, rows: int, *, seed: int, start: int = 0) -> None:
        result = await client.push_stream(self.session, url, segment_id, rows, seed=seed, start=start)
        if result.get("audienceSize") != rows:
            raise RuntimeError(f"a streamed REPLACE of {rows} rows left {result.get('audienceSize')} members")

    def naive_peer(self) -> anchors.NaivePeer:
        if self.naive is None:
            self.naive = anchors.NaivePeer(self.dsn)
        return self.naive

    async def repeat(self, measure: Callable[[int], Awaitable[tuple[float, float]]]) -> tuple[list[float], list[float]]:
        """``measure(repeat)`` → (gateway seconds, psql seconds), ``--repeats`` times: the anchor is
        measured beside each gateway run, so that a change in the machine's load shows in both."""
        pairs = [await measure(repeat) for repeat in range(self.args.repeats)]
        return [gateway for gateway, _ in pairs], [psql for _, psql in pairs]


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _figures(rows: int, runs: tuple[list[float], list[float]], **more: object) -> dict:
    """Gateway time and rows/s beside the psql anchor's; ``vs_psql`` = gateway time / psql time."""
    gateway_runs, psql_runs = runs
    seconds, psql = _median(gateway_runs), _median(psql_runs)
    return {"rows": rows, "seconds": seconds, "runs_s": [round(r, 3) for r in gateway_runs],
            "rows_per_s": round(rows / seconds), "psql_s": psql, "psql_runs_s": [round(r, 3) for r in psql_runs],
            "psql_rows_per_s": round(rows / psql),
            "vs_psql": round(seconds / psql, 2), **more}


def _target(text: str, met: bool) -> dict:
    return {"target": text, "met": met}


def _committed_once(results: list[dict], rows: int) -> None:
    committed = [r for r in results if r.get("replaceCommitted")]
    if len(committed) != 1 or committed[0].get("audienceSize") != rows:
        raise RuntimeError(f"REPLACE did not commit once with {rows} members: {committed}")


async def _timed_push(run: Run, segment_id: str, method: str, batches: list[tuple[int, bytes]],
                      concurrency: int | None = None) -> tuple[float, list[dict]]:
    """The batches with ``concurrency`` in flight (default ``--concurrency``; 1: one after another, on one
    keep-alive connection, as a plain Exchange client may send them)."""
    started = time.perf_counter()
    results = await client.push_batches(run.session, run.gateway.url, segment_id, method, batches, len(batches),
                                        concurrency or run.args.concurrency)
    return time.perf_counter() - started, results


async def _naive_replace(run: Run, lines: list[str]) -> dict:
    """The naive peer on the same REPLACE (batch 1 first: it clears the table), capped in time."""
    peer = run.naive_peer()
    batches = data.batches(lines, run.batch_rows)
    started = time.perf_counter()
    deadline = started + run.args.naive_cap
    results = await client.push_batches(run.session, peer.url, "1", "PUT", batches[:1], len(batches), 1)
    results += await client.push_batches(run.session, peer.url, "1", "PUT", batches[1:], len(batches),
                                         run.args.concurrency, deadline=deadline)
    seconds = time.perf_counter() - started
    done = sum(int(r["numReceived"]) for r in results)
    if done == len(lines) and peer.count() != done:
        raise RuntimeError("the naive peer lost rows")
    rate = done / seconds
    return {"rows_done": done, "seconds": round(seconds, 3), "rows_per_s": round(rate),
            "capped": done < len(lines), "projected_s": round(len(lines) / rate, 3)}


async def _replace_figures(run: Run, name: str, concurrency: int | None) -> tuple[dict, list[str]]:
    """REPLACE of N rows in batches (``concurrency`` in flight; 1: one after another on one connection),
    committed atomically at the last one, beside psql ``\\copy`` of the same rows."""
    lines = run.lines(run.rows, seed=1)
    batches = data.batches(lines, run.batch_rows)
    csv_path = run.csv("replace", lines)

    async def once(repeat: int) -> tuple[float, float]:
        psql = anchors.copy_in_seconds(run.dsn, csv_path)
        segment_id = await run.segment(f"{name}-{repeat}")
        seconds, results = await _timed_push(run, segment_id, "PUT", batches, concurrency=concurrency)
        _committed_once(results, run.rows)
        return seconds, psql

    extra = {} if concurrency is None else {"concurrency": concurrency}
    figures = _figures(run.rows, await run.repeat(once), batches=len(batches), **extra)
    figures["targets"] = [_target("≤ 1.0× psql \\copy", figures["vs_psql"] <= 1.0)]
    return figures, lines


async def replace(run: Run) -> dict:
    """REPLACE of N rows in batches, ``--concurrency`` in flight; also against the naive peer."""
    figures, lines = await _replace_figures(run, "replace", None)
    naive = await _naive_replace(run, lines)
    figures["naive"] = naive
    figures["vs_naive_speedup"] = round(naive["projected_s"] / figures["seconds"], 1)
    figures["targets"].append(_target("≥ 10× faster than the naive peer", figures["vs_naive_speedup"] >= 10))
    return figures


async def replace_seq(run: Run) -> dict:
    """The replace scenario's batches sent one after another on one connection, as a plain Exchange
    client may send them (``--concurrency`` does not apply)."""
    figures, _ = await _replace_figures(run, "replace-seq", 1)
    return figures


async def _add(run: Run, name: str, concurrency: int | None) -> dict:
    """ADD of N new rows in batches into an N-member segment (``concurrency`` in flight; 1: one after
    another on one connection)."""
    lines = run.lines(run.rows, seed=2, start=ADD_START)
    batches = data.batches(lines, run.batch_rows)
    csv_path = run.csv("add", lines)

    async def once(repeat: int) -> tuple[float, float]:
        psql = anchors.copy_in_seconds(run.dsn, csv_path)
        segment_id = await run.segment(f"{name}-{repeat}", load=run.rows)
        seconds, _ = await _timed_push(run, segment_id, "POST", batches, concurrency=concurrency)
        if anchors.member_count(run.dsn, segment_id) != 2 * run.rows:
            raise RuntimeError("ADD did not add every row")
        return seconds, psql

    extra = {} if concurrency is None else {"concurrency": concurrency}
    figures = _figures(run.rows, await run.repeat(once), batches=len(batches), **extra,
                       anchor="psql \\copy of the N rows into an empty keyed table")
    figures["targets"] = [_target("≤ 1.5× psql \\copy", figures["vs_psql"] <= 1.5)]
    return figures


async def add(run: Run) -> dict:
    """ADD of N new rows in batches into an N-member segment, ``--concurrency`` in flight."""
    return await _add(run, "add", None)


async def add_seq(run: Run) -> dict:
    """ADD as ``add``, its batches sent one after another on one connection."""
    return await _add(run, "add-seq", 1)


async def remove(run: Run) -> dict:
    """REMOVE of N/10 identities in batches from an N-member segment."""
    everyone = run.lines(run.rows, seed=1)
    gone = everyone[:max(1, run.rows // 10)]
    batches = data.batches(gone, run.batch_rows)
    full, gone_csv = run.csv("replace", everyone), run.csv("remove", gone)

    async def once(repeat: int) -> tuple[float, float]:
        psql = anchors.remove_seconds(run.dsn, full, gone_csv)
        segment_id = await run.segment(f"remove-{repeat}", load=run.rows)
        seconds, _ = await _timed_push(run, segment_id, "DELETE", batches)
        if anchors.member_count(run.dsn, segment_id) != run.rows - len(gone):
            raise RuntimeError("REMOVE did not remove every row")
        return seconds, psql

    return _figures(len(gone), await run.repeat(once), batches=len(batches), segment_rows=run.rows,
                    anchor="psql: \\copy into a temporary table, DELETE … USING, one transaction")


async def export(run: Run) -> dict:
    """The Exchange job flow (create, poll, download) against ``psql \\copy (SELECT …) TO``."""
    segment_id = await run.segment("export", load=run.rows, seed=7)
    out = run.work / "export-psql.csv"
    flows: list[dict] = []

    async def once(repeat: int) -> tuple[float, float]:
        psql = anchors.copy_out_seconds(run.dsn, segment_id, ATTRIBUTES, out)
        flows.append(await client.job_flow(run.session, run.gateway.url, segment_id))
        return flows[-1]["job_s"] + flows[-1]["download_s"], psql

    figures = _figures(run.rows, await run.repeat(once),
                       job_s=_median([f["job_s"] for f in flows]),
                       download_s=_median([f["download_s"] for f in flows]),
                       download_mb=round(flows[0]["bytes"] / 2**20, 1),
                       download_client="curl" if client.CURL else "aiohttp")
    figures["throughput_vs_psql"] = round(figures["psql_s"] / figures["seconds"], 2)
    figures["download_throughput_vs_psql"] = round(figures["psql_s"] / figures["download_s"], 2)
    figures["targets"] = [_target("throughput ≥ 0.8× psql \\copy … TO (job + download)",
                                  figures["throughput_vs_psql"] >= 0.8)]
    return figures


async def export_files(run: Run) -> dict:
    """Export jobs to files (``/api/export/jobs``, create → SUCCEEDED: the file is written, fsynced and
    renamed) as csv.gz and csv, against ``psql \\copy (SELECT …) TO PROGRAM 'gzip > file'`` and
    ``psql \\copy (SELECT …) TO file`` of the same rows. The headline figures are csv.gz's."""
    segment_id = await run.segment("export-files", load=run.rows, seed=11)
    results: dict[str, dict] = {}
    for file_format, anchor in (("csv.gz", anchors.copy_out_gzip_seconds), ("csv", anchors.copy_out_seconds)):
        out = run.work / f"export-files-psql.{file_format}"
        flows: list[dict] = []

        async def once(repeat: int) -> tuple[float, float]:
            psql = anchor(run.dsn, segment_id, ATTRIBUTES, out)
            flows.append(await client.export_file_flow(run.session, run.gateway.url, segment_id, file_format))
            return flows[-1]["seconds"], psql

        results[file_format] = _figures(run.rows, await run.repeat(once),
                                        file_mb=round(flows[0]["job"]["metrics"]["bytes"] / 2**20, 1),
                                        psql_file_mb=round(out.stat().st_size / 2**20, 1))
    figures = {**results["csv.gz"], "format": "csv.gz", "csv": results["csv"],
               "anchor": "psql \\copy (SELECT …) TO PROGRAM 'gzip > file' (csv: TO file)"}
    figures["targets"] = [_target("csv.gz ≤ 1.0× psql \\copy | gzip", figures["vs_psql"] <= 1.0),
                          _target("csv ≤ 1.2× psql \\copy … TO", results["csv"]["vs_psql"] <= 1.2)]
    return figures


async def big(run: Run) -> dict:
    """One REPLACE request of 10·N rows generated on the fly; the gateway's RSS meanwhile. Beside it,
    the naive peer on one request of N rows (a tenth: it holds the whole body and every row)."""
    rows = 10 * run.rows
    segment_id = await run.segment("big")
    started = time.perf_counter()
    async with RssSampler(run.gateway.pid) as rss:
        await run.load(run.gateway.url, segment_id, rows, seed=3, start=BIG_START)
    seconds = time.perf_counter() - started
    figures = {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds), **rss.figures()}

    peer = run.naive_peer()
    started = time.perf_counter()
    async with RssSampler(peer.pid) as naive_rss:
        await client.push_stream(run.session, peer.url, "1", run.rows, seed=3, start=BIG_START)
    naive_seconds = time.perf_counter() - started
    if peer.count() != run.rows:
        raise RuntimeError("the naive peer lost rows")
    figures["naive"] = {"rows": run.rows, "seconds": round(naive_seconds, 3),
                        "rows_per_s": round(run.rows / naive_seconds), **naive_rss.figures()}
    figures["targets"] = [_target("peak RSS ≤ 150 MB", figures["rss_peak_mb"] <= 150)]
    return figures


async def latency(run: Run) -> dict:
    """``GET /v1/segments`` every 10 ms while a REPLACE of N rows is pushed."""
    batches = data.batches(run.lines(run.rows, seed=1), run.batch_rows)
    segment_id = await run.segment("latency")
    stop = asyncio.Event()
    probe = asyncio.create_task(client.latency_probe(run.session, run.gateway.url, stop))
    seconds, results = await _timed_push(run, segment_id, "PUT", batches)
    stop.set()
    samples = sorted(await probe)
    _committed_once(results, run.rows)
    ms = [1000 * s for s in samples]
    figures = {"rows": run.rows, "push_s": round(seconds, 3), "samples": len(ms),
               "p50_ms": round(ms[len(ms) // 2], 1), "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
               "max_ms": round(ms[-1], 1)}
    figures["targets"] = [_target("p99 ≤ 50 ms", figures["p99_ms"] <= 50)]
    return figures


async def two_serve(run: Run) -> dict:
    """Two ``serve`` processes on one database (the second on the first's embedded server) each take
    half of one REPLACE's batches (odd / even); the audience must commit exactly once."""
    lines = run.lines(run.rows, seed=1)
    batches = data.batches(lines, run.batch_rows)
    csv_path = run.csv("replace", lines)
    second = Gateway(run.work / "data-second", database_url=run.dsn)
    each = max(1, run.args.concurrency // 2)
    try:
        async def once(repeat: int) -> tuple[float, float]:
            psql = anchors.copy_in_seconds(run.dsn, csv_path)
            segment_id = await run.segment(f"two-serve-{repeat}")
            started = time.perf_counter()
            halves = await asyncio.gather(*(
                client.push_batches(run.session, gateway.url, segment_id, "PUT", batches[i::2], len(batches), each)
                for i, gateway in enumerate((run.gateway, second))))
            seconds = time.perf_counter() - started
            _committed_once(halves[0] + halves[1], run.rows)
            if anchors.member_count(run.dsn, segment_id) != run.rows:
                raise RuntimeError("the two-process REPLACE did not leave exactly N members")
            return seconds, psql

        runs = await run.repeat(once)
    finally:
        second.stop()
    return _figures(run.rows, runs, batches=len(batches), processes=2, committed_once=True)


def _with_quotes(lines: list[str]) -> list[str]:
    """The lines with a quoted LastName every 1000th row (a comma and doubled quotes in it), and every
    10 000th with a newline in it too: a file that only a CSV parser can cut into records."""
    out = list(lines)
    for i in range(0, len(out), 1000):
        email, first, last, sex = out[i].rstrip("\n").split(",")
        last = f'"{last}, Jr."' if i % 10_000 else f'"{last}\nJr. ""the second"""'
        out[i] = f"{email},{first},{last},{sex}\n"
    return out


async def _push_command(run: Run, path: Path, segment_id: str) -> tuple[float, str]:
    """``audience-gateway push`` as a user runs it (its own process, interpreter start included)."""
    argv = [sys.executable, "-m", "gateway", "push", str(path), "--url", run.gateway.url, "--key", KEY,
            "--segment", segment_id, "--mode", "replace", "--batch-rows", str(run.batch_rows),
            "--concurrency", str(run.args.concurrency)]
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"push exited {process.returncode}: {err.decode()[-2000:]}")
    return seconds, out.decode()


async def push(run: Run) -> dict:
    """``audience-gateway push`` of an N-row file (a few quoted fields) as a REPLACE, end to end, against
    the same batches (the same bytes) sent by a plain client with the same concurrency (the mean of its
    runs right before and right after)."""
    lines = _with_quotes(run.lines(run.rows, seed=1))
    batches = data.batches(lines, run.batch_rows)
    path = run.csv("push", lines)
    pairs: list[tuple[float, float]] = []
    counting: list[float] = []
    own: list[float] = []  # the push's own figure: without starting the interpreter and importing
    plain_runs: list[float] = []

    async def plain_client(name: str) -> float:
        seconds, results = await _timed_push(run, await run.segment(name), "PUT", batches)
        _committed_once(results, run.rows)
        plain_runs.append(seconds)
        return seconds

    before = await plain_client("push-plain-0")
    for repeat in range(run.args.repeats):
        # The plain client runs right before and right after each push: their mean is the push's anchor,
        # so that a drift of the machine or the database (a checkpoint after a load) weighs on both alike.
        segment_id = await run.segment(f"push-{repeat}")
        seconds, out = await _push_command(run, path, segment_id)
        if f"REPLACE committed, audience size {run.rows}" not in out:
            raise RuntimeError(f"push did not commit {run.rows} members: {out}")
        inside, count = re.search(r"in ([\d.]+) s \(counting ([\d.]+) s", out).groups()  # type: ignore[union-attr]
        counting.append(float(count))
        own.append(float(inside))
        after = await plain_client(f"push-plain-{repeat + 1}")
        pairs.append((seconds, (before + after) / 2))
        before = after
    seconds, plain = _median([p for p, _ in pairs]), _median([c for _, c in pairs])
    figures = {"rows": run.rows, "seconds": seconds, "runs_s": [round(p, 3) for p, _ in pairs],
               "rows_per_s": round(run.rows / seconds), "counting_s": _median(counting),
               "push_own_s": _median(own),
               "plain_client_s": plain, "plain_client_runs_s": [round(c, 3) for c in plain_runs],
               "vs_plain_client": round(seconds / plain, 2), "batches": len(batches),
               "file_mb": round(path.stat().st_size / 1e6, 1)}
    figures["targets"] = [_target(f"≤ 1.2× a plain client sending the same batches ({plain:.2f} s)",
                                  figures["vs_plain_client"] <= 1.2)]
    return figures


SEGMENT_JOB_EXPRESSION = 'Country = "US" and LastPurchase occurs <= 30 days before now'


async def _segment_job_definition(run: Run, source: str) -> str:
    """The scenario's definition over ``source``: by the definitions API, or as rows where it is absent."""
    body = {"name": "segment-job", "expression": {"type": "PQL", "format": "pql/text", "value": SEGMENT_JOB_EXPRESSION},
            "sources": [source]}
    async with run.session.post(f"{run.gateway.url}/api/segment/definitions", json=body,
                                headers=AUTH) as response:
        if response.status != 404:
            payload = await response.json()
            if response.status not in (200, 201):
                raise RuntimeError(f"POST /api/segment/definitions: {response.status} {payload}")
            return str(payload["result"]["id"])
    return run_psql(run.dsn, SQL["segment_job_define"].format(source=int(source))).split()[0]


async def segment_job(run: Run) -> dict:
    """A segment job over an N-member source selecting about 10 % (``SEGMENT_JOB_EXPRESSION``), timed
    from ``POST /api/segment/jobs`` to SUCCEEDED, beside psql running the equivalent ``CREATE TABLE … AS
    SELECT … WHERE …`` plus its primary key. The first job builds the audience; each repeat's job also
    compares with the previous members (realized / existing / exited). ``build_ms``: the definition's own
    time as the job reports it (profile count, build, index, compare); the rest is the queue and the swap."""
    source = await run.segment("segment-job-source")
    today = dt.datetime.now(dt.timezone.utc).date()
    await client.push_stream(run.session, run.gateway.url, source, run.rows, seed=0,
                             body=data.profile_stream(run.rows, today))
    definition = await _segment_job_definition(run, source)
    jobs: list[dict] = []

    async def once(repeat: int) -> tuple[float, float]:
        run_psql(run.dsn, SQL["anchor_segment_job_drop"])
        psql = timed_psql(run.dsn, SQL["anchor_segment_job"].format(source=int(source)))
        flow = await client.segment_job_flow(run.session, run.gateway.url, definition)
        jobs.append(flow["job"])
        return flow["seconds"], psql

    runs = await run.repeat(once)
    selected = jobs[0]["metrics"]["segmentedProfileCounter"][definition]
    expected = int(run_psql(run.dsn, SQL["anchor_segment_job_count"]))
    if selected != expected:
        raise RuntimeError(f"the segment job selected {selected} members, psql {expected}")
    figures = _figures(run.rows, runs, selected=selected,
                       build_ms=[job["metrics"]["segmentTimeInMs"][definition] for job in jobs],
                       anchor="psql: CREATE TABLE … AS SELECT … WHERE …, then its primary key")
    figures["targets"] = [_target("≤ 1.3× psql", figures["vs_psql"] <= 1.3)]
    return figures


async def estimate(run: Run) -> dict:
    """``GET /api/estimate/{previewId}`` over an N-member source (the segment-job scenario's profiles and
    expression), timed per request at the gateway's default settings (an exact count if it finishes within
    ``GATEWAY_ESTIMATE_EXACT_MS``, else a ``TABLESAMPLE SYSTEM`` sample), beside psql counting the same
    members. The answer must be psql's count when exact, and its 95 % interval must hold it when sampled."""
    source = await run.segment("estimate-source")
    today = dt.datetime.now(dt.timezone.utc).date()
    await client.push_stream(run.session, run.gateway.url, source, run.rows, seed=0,
                             body=data.profile_stream(run.rows, today))
    body = {"predicateExpression": SEGMENT_JOB_EXPRESSION, "predicateType": "pql/text", "sources": [source]}
    async with run.session.post(f"{run.gateway.url}/api/preview", json=body, headers=AUTH) as response:
        payload = await response.json()
        if response.status != 200:
            raise RuntimeError(f"POST /api/preview: {response.status} {payload}")
    preview = payload["result"]["previewId"]
    answers: list[dict] = []

    async def once(repeat: int) -> tuple[float, float]:
        psql = timed_psql(run.dsn, SQL["anchor_estimate_count"].format(source=int(source)))
        started = time.perf_counter()
        async with run.session.get(f"{run.gateway.url}/api/estimate/{preview}", headers=AUTH) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"GET /api/estimate/{preview}: {response.status} {answer}")
        answers.append(answer["result"])
        return time.perf_counter() - started, psql

    runs = await run.repeat(once)
    expected = int(run_psql(run.dsn, SQL["anchor_estimate_count"].format(source=int(source))))
    held = [a["lowerBound"] <= expected <= a["upperBound"] and (not a["exact"] or a["estimatedSize"] == expected)
            for a in answers]
    if not all(held):
        raise RuntimeError(f"an estimate missed psql's count {expected}: {answers}")
    last = answers[-1]
    figures = _figures(run.rows, runs, expected=expected, exact=[a["exact"] for a in answers],
                       estimated=[a["estimatedSize"] for a in answers], standard_error=last["standardError"],
                       interval=[last["lowerBound"], last["upperBound"]], read=last["profilesReadSoFar"],
                       anchor="psql: SELECT count(*) … WHERE (the expression by hand)")
    figures["targets"] = [_target("≤ 1 s", figures["seconds"] <= 1.0)]
    return figures


def _identity(line: str) -> str:
    return line.split(",", 1)[0]


async def erase_wide(run: Run) -> dict:
    """One identity erased from S segments (S = N/1000, 10 to 1000: 1000 at N = 1M), each holding it among
    a few members, by ``POST /api/privacy/erase`` and its job polled until it ends; beside psql deleting
    another identity from each members table in one transaction. Each repeat on an endpoint of its own that
    holds just these segments (an erasure reads every segment and export file of its endpoint: the other
    scenarios' would be measured too, and the earlier repeats')."""
    count = min(1000, max(10, run.rows // 1000))
    lines = run.lines(3, seed=11, start=60_000_000)
    erased, anchored = _identity(lines[0]), _identity(lines[1])
    body = (data.HEADER + "".join(lines)).encode()
    gate = asyncio.Semaphore(run.args.concurrency)

    async def seeded(number: int, auth: dict[str, str]) -> str:
        async with gate:
            segment_id = await create_segment(run.session, run.gateway.url, f"erase-wide-{number}", auth=auth)
            await client.push_batches(run.session, run.gateway.url, segment_id, "POST", [(1, body)], 1, 1, auth=auth)
            return segment_id

    async def once(repeat: int) -> tuple[float, float]:
        auth = new_endpoint(run.dsn, f"erase-wide-{repeat}-{time.time_ns()}")
        segments = await asyncio.gather(*(seeded(i, auth) for i in range(count)))
        psql = anchors.erase_one_seconds(run.dsn, segments, anchored)
        seconds, result = await client.erase_flow(run.session, run.gateway.url, [erased], auth=auth)
        if result["totalErased"] != count:
            raise RuntimeError(f"the erasure found {result['totalErased']} of {count} members")
        return seconds, psql

    gateway_runs, psql_runs = await run.repeat(once)
    seconds = _median(gateway_runs)
    figures = {"rows": count, "segments": count, "seconds": seconds, "runs_s": [round(r, 3) for r in gateway_runs],
               "rows_per_s": round(count / seconds), "psql_s": _median(psql_runs),
               "psql_rows_per_s": round(count / _median(psql_runs)),
               "vs_psql": round(seconds / _median(psql_runs), 2),
               "anchor": "psql: one DELETE … WHERE identity = … per members table, one transaction"}
    goal = "≤ 1 s for 1000 segments" if count == 1000 else f"≤ {count / 1000:g} s for {count} segments (1 s per 1000)"
    figures["targets"] = [_target(goal, seconds <= count / 1000)]
    return figures


async def erase_deep(run: Run) -> dict:
    r"""K identities (K = N/100, at most 10,000) erased from one N-member segment (the request's JSON list,
    then its job); beside psql ``\copy`` of them into a temporary table and ``DELETE … USING``."""
    everyone = run.lines(run.rows, seed=1)
    gone = everyone[:min(10_000, max(1, run.rows // 100))]
    identities = [_identity(line) for line in gone]
    full, gone_csv = run.csv("replace", everyone), run.csv("erase-deep", gone)

    async def once(repeat: int) -> tuple[float, float]:
        psql = anchors.remove_seconds(run.dsn, full, gone_csv)
        segment_id = await run.segment(f"erase-deep-{repeat}", load=run.rows)
        seconds, result = await client.erase_flow(run.session, run.gateway.url, identities)
        if result["found"].get(segment_id) != len(identities):
            raise RuntimeError(f"the erasure found {result['found']} of {len(identities)}")
        return seconds, psql

    figures = _figures(len(identities), await run.repeat(once), segment_rows=run.rows,
                       anchor="psql: \\copy into a temporary table, DELETE … USING, one transaction")
    figures["targets"] = [_target(f"≤ 10 s (the goal is for 10,000 identities from 10M members; here "
                                  f"{len(identities):,} from {run.rows:,})", figures["seconds"] <= 10)]
    return figures


async def hashing(run: Run) -> dict:
    """REPLACE of N rows in batches into a segment with ``identityHashing: sha256`` against the same into a
    plain one, alternately in each repeat: the cost of hashing on ingest."""
    batches = data.batches(run.lines(run.rows, seed=1), run.batch_rows)
    plain_runs: list[float] = []

    async def once(repeat: int) -> tuple[float, float]:
        hashed_id = await create_segment(run.session, run.gateway.url, f"hashing-{repeat}", identityHashing="sha256")
        seconds, results = await _timed_push(run, hashed_id, "PUT", batches)
        _committed_once(results, run.rows)
        plain_id = await run.segment(f"hashing-plain-{repeat}")
        plain_seconds, results = await _timed_push(run, plain_id, "PUT", batches)
        _committed_once(results, run.rows)
        plain_runs.append(plain_seconds)
        return seconds, plain_seconds

    hashed_runs, _ = await run.repeat(once)
    seconds, plain = _median(hashed_runs), _median(plain_runs)
    figures = {"rows": run.rows, "seconds": seconds, "runs_s": [round(r, 3) for r in hashed_runs],
               "rows_per_s": round(run.rows / seconds), "plain_s": plain,
               "plain_runs_s": [round(r, 3) for r in plain_runs], "vs_plain": round(seconds / plain, 2),
               "batches": len(batches)}
    figures["targets"] = [_target("≤ 1.15× the same REPLACE into a plain segment", figures["vs_plain"] <= 1.15)]
    return figures


SEARCHES = ["summer", "summ*", '"summer sale"', "name:winter", "description:bought", "gold OR vip", "shoes france",
            "cust* ord* spain"]  # and id:<the last segment's id>


async def _latencies(run: Run, path: str, repeats: int = 20) -> tuple[list[float], dict]:
    """Seconds of ``repeats`` GETs of ``path`` one after another (after two untimed), and the last answer."""
    times, result = [], {}
    for number in range(repeats + 2):
        started = time.perf_counter()
        async with run.session.get(f"{run.gateway.url}{path}", headers=AUTH) as response:
            payload = await response.json()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {payload}")
        if number >= 2:
            times.append(time.perf_counter() - started)
        result = payload["result"]
    return times, result


def _latency_figures(rows: int, per_request: dict[str, list[float]], **more: object) -> dict:
    """Each request's median; ``seconds`` is the slowest of those medians."""
    medians = {name: round(statistics.median(times) * 1000, 2) for name, times in per_request.items()}
    seconds = max(medians.values()) / 1000
    return {"rows": rows, "seconds": round(seconds, 4), "rows_per_s": round(rows / seconds), "p50_ms": medians,
            "max_ms": {name: round(max(times) * 1000, 2) for name, times in per_request.items()}, **more}


async def search(run: Run) -> dict:
    """``GET /api/search/entities`` over S segments of one endpoint (S = N/100, at most 10,000: 10,000 at
    N = 1M) and a definition for one in ten, written as rows; each search of ``SEARCHES`` 20 times in a
    row, over HTTP. ``seconds``: the slowest search's median."""
    count = min(10_000, max(10, run.rows // 100))
    run_psql(run.dsn, SQL["search_seed"].format(count=count))
    last = run_psql(run.dsn, "SELECT max(id) FROM segments")
    per_request = {}
    for text in [*SEARCHES, f"id:{last}"]:
        times, result = await _latencies(run, "/api/search/entities?" + urllib.parse.urlencode({"s": text}))
        if not result["entities"]:
            raise RuntimeError(f"the search {text!r} found nothing among {count} segments")
        per_request[text] = times
    figures = _latency_figures(count, per_request, segments=count)
    goal = "≤ 50 ms at 10,000 segments" if count == 10_000 else f"≤ 50 ms (the goal is for 10,000 segments; here {count:,})"
    figures["targets"] = [_target(goal, figures["seconds"] <= 0.05)]
    return figures


def _holders(identity_number: int, segments: int, members: int) -> int:
    """How many of bench.sql's members_seed segments hold u<identity_number>@example.com."""
    if identity_number >= 4 * members:
        return 0
    return sum(1 for i in range(1, segments + 1) if (identity_number - 37 * i) % (4 * members) < members)


async def members(run: Run) -> dict:
    """``GET /api/search/members`` over S segments of M members each (S = N/1000 at most 1,000, M = N/100 at
    most 10,000: 1,000 × 10,000 at N = 1M), written straight into their tables; an identity held by about a
    quarter of them, and one held by none, 20 times each. ``seconds``: the slower median."""
    segments, size = min(1000, max(10, run.rows // 1000)), min(10_000, max(10, run.rows // 100))
    run_psql(run.dsn, SQL["members_seed"].format(segments=segments, members=size))
    per_request = {}
    for name, number in (("held", 37 + 5), ("absent", 4 * size + 1)):
        identity = f"  U{number}@Example.com "  # normalised as a push would: trimmed, lower-cased (email column)
        times, result = await _latencies(run, "/api/search/members?" + urllib.parse.urlencode({"identity": identity}))
        expected = _holders(number, segments, size)
        if result["totalCount"] != expected:
            raise RuntimeError(f"{identity!r} is in {expected} segments; the look-up found {result['totalCount']}")
        per_request[f"{name} ({expected} audiences)"] = times
    figures = _latency_figures(segments * size, per_request, segments=segments, members_per_segment=size)
    goal = "≤ 100 ms at 1,000 × 10,000" if (segments, size) == (1000, 10_000) else \
        f"≤ 100 ms (the goal is for 1,000 × 10,000; here {segments:,} × {size:,})"
    figures["targets"] = [_target(goal, figures["seconds"] <= 0.1)]
    return figures


SCENARIOS: dict[str, Callable[[Run], Awaitable[dict]]] = {
    "replace": replace, "replace-seq": replace_seq, "add": add, "add-seq": add_seq, "remove": remove,
    "export": export, "export-files": export_files, "big": big, "latency": latency,
    "two-serve": two_serve, "push": push, "erase-wide": erase_wide, "erase-deep": erase_deep, "hashing": hashing,
    "segment-job": segment_job, "search": search, "members": members, "estimate": estimate}
