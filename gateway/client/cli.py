"""The ``push`` and ``pull`` subcommands: their arguments, turned into options for the clients."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from gateway.client.http import RetryPolicy
from gateway.client.pull import PullOptions, pull
from gateway.client.push import METHOD_OF, PushOptions, push

EXIT_INTERRUPTED = 130



def positive_int(text: str) -> int:
    """An argparse type: the client knows nothing of the server's settings (import-linter contract)."""
    if (value := int(text)) < 1:
        raise ValueError("expected a positive integer")
    return value

def add_commands(commands: argparse._SubParsersAction) -> None:
    push_parser = commands.add_parser(
        "push", help="send a CSV file (.csv or .csv.gz, any size) to a segment in batches",
        description="Send a CSV file to a segment as Exchange-style batches. Exit codes: 0 ok, 1 invalid rows "
                    "with --strict, 2 usage (bad arguments, unreadable file or header), 3 server or network failure.")
    push_parser.add_argument("file", type=Path, metavar="FILE", help="CSV, or gzip-compressed CSV")
    _add_connection(push_parser)
    target = push_parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--segment", metavar="ID", help="the segment to push to")
    target.add_argument("--create", metavar="NAME", help="create a segment with this name and push to it")
    push_parser.add_argument("--mode", choices=sorted(METHOD_OF), default="add",
                             help="add (POST), replace (PUT: commits once every batch is in) or remove (DELETE)")
    push_parser.add_argument("--batch-rows", type=positive_int, default=10_000, metavar="N",
                             help="records per batch (default: 10000, as Exchange sends)")
    push_parser.add_argument("--concurrency", type=positive_int, default=4, metavar="N",
                             help="batches in flight (default: 4; use 1 for ADD when an identity repeats "
                                  "across batches with different attributes)")
    push_parser.add_argument("--ids", metavar="COLUMN",
                             help="the identity column, sent as the ids parameter (default: the server's choice: "
                                  "an ids column, else one whose name contains email, else the first)")
    push_parser.add_argument("--strict", action="store_true",
                             help="send nothing if the file has invalid rows; exit 1 if the server found any")
    push_parser.add_argument("--source-segment", metavar="ID",
                             help="sourceSegmentID, part of a REPLACE's session key (default: new for each run)")
    push_parser.set_defaults(run=_push)

    pull_parser = commands.add_parser(
        "pull", help="download a segment's audience as CSV (directly or by an export job)",
        description="Download a segment's audience into FILE (written as FILE.part, renamed when complete). "
                    "Exit codes: 0 ok, 2 usage, 3 server or network failure.")
    _add_connection(pull_parser)
    pull_parser.add_argument("--segment", metavar="ID", required=True, help="the segment to download")
    pull_parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                             help="where to write the CSV (FILE.part until complete)")
    pull_parser.set_defaults(run=_pull)


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the gateway's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--key", required=True, help="an API key (write scope to push, read to pull)")
    parser.add_argument("--retries", type=positive_int, default=6, metavar="N",
                        help="attempts per request before giving up (default: 6)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="longest wait for a connection or for the server's next bytes (default: 300)")


async def _push(args: argparse.Namespace, settings: object) -> int:  # the server's settings: a client needs none
    return await _interruptible(push(PushOptions(
        url=args.url, key=args.key, path=args.file, segment=args.segment, create=args.create, mode=args.mode,
        batch_rows=args.batch_rows, concurrency=args.concurrency, ids=args.ids, strict=args.strict,
        source_segment=args.source_segment, retry=RetryPolicy(attempts=args.retries), timeout=args.timeout)))


async def _pull(args: argparse.Namespace, settings: object) -> int:  # the server's settings: a client needs none
    return await _interruptible(pull(PullOptions(url=args.url, key=args.key, segment=args.segment,
                                                 output=args.output, retry=RetryPolicy(attempts=args.retries),
                                                 timeout=args.timeout)))


async def _interruptible(run: Coroutine[Any, Any, int]) -> int:
    """Ctrl-C cancels the run: exit 130, not the 0 that ``serve`` and ``top`` answer to it."""
    try:
        return await run
    except asyncio.CancelledError:
        print("audience-gateway: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
