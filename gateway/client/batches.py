"""A CSV file (plain or gzip) split into Exchange-style batches: the header, then ``batch_rows`` records.

Two passes, each in constant memory:

1. ``scan`` parses the file with the server's own parser (``gateway.csvparse``: the same RFC 4180 rules,
   quoted newlines included, the same invalid rows) and notes the line on which every ``batch_rows``-th
   record starts. That gives ``totalBatchCount`` before anything is sent, and the invalid rows for
   ``--strict``.
2. ``cut`` reads the file again and cuts it at those lines: each batch body is the header's bytes followed
   by its records' bytes exactly as they are in the file (never re-serialised), so the server sees the
   user's bytes and reports the same rows invalid.

Records are counted as the server counts ``numReceived``: data rows, valid or not; blank lines are not
rows (they travel with the record before them).
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from gateway.csvparse import CsvHeaderError, CsvStreamParser

CHUNK_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
MAX_SAMPLES = 10


class FileProblem(Exception):
    """The file cannot be pushed as it is (unreadable, not gzip, no valid header): a usage error."""


@dataclasses.dataclass
class Plan:
    header: list[str]
    starts: list[int]  # the line on which each batch's first record starts (empty: no records)
    records: int
    batch_rows: int
    bytes: int  # the file's size once gunzipped
    invalid: int = 0
    invalid_samples: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        """totalBatchCount: a file without records is still sent once (a REPLACE with it empties the segment)."""
        return max(1, len(self.starts))

    def rows_in(self, number: int) -> int:
        """Records in batch ``number`` (1-based)."""
        return min(self.batch_rows, self.records - (number - 1) * self.batch_rows) if self.records else 0

    def file_line(self, number: int, body_line: int) -> int:
        """The file's line for line ``body_line`` of batch ``number``'s body (header lines come first)."""
        if not self.starts:
            return body_line
        header_lines = self.starts[0] - 1
        return self.starts[number - 1] + body_line - header_lines - 1


def open_csv(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        with open(path, "rb") as sniff:
            packed = sniff.read(2) == GZIP_MAGIC
        return gzip.open(path, "rb") if packed else open(path, "rb")  # type: ignore[return-value]
    except OSError as exc:
        raise FileProblem(f"cannot read {path}: {exc.strerror}") from None


def read_chunks(path: Path) -> Iterator[bytes]:
    with open_csv(path) as source:
        try:
            while chunk := source.read(CHUNK_BYTES):
                yield chunk
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise FileProblem(f"cannot read {path}: {exc}") from None


def scan(path: Path, batch_rows: int, on_chunk: Callable[[int], None] = lambda n: None) -> Plan:
    """Pass 1: count records and note where batches start."""
    invalid: list[tuple[int, str]] = []
    parser = CsvStreamParser(on_invalid=lambda line, reason, raw: invalid.append((line, reason)))
    plan = Plan(header=[], starts=[], records=0, batch_rows=batch_rows, bytes=0)

    def take(rows: list[tuple[int, list[str]]]) -> None:
        # Within one feed, invalid rows are reported before the valid rows are returned: merge by line.
        lines = sorted([line for line, _ in rows] + [line for line, _ in invalid])
        plan.invalid += len(invalid)
        plan.invalid_samples += invalid[:MAX_SAMPLES - len(plan.invalid_samples)]
        invalid.clear()
        for line in lines:
            if plan.records % batch_rows == 0:
                plan.starts.append(line)
            plan.records += 1

    try:
        for chunk in read_chunks(path):
            plan.bytes += len(chunk)
            take(parser.feed(chunk))
            on_chunk(len(chunk))
        take(parser.finish())
    except CsvHeaderError as exc:
        raise FileProblem(f"{path}: {exc}") from None
    assert parser.header is not None  # finish() raises otherwise
    plan.header = parser.header
    return plan


def cut(path: Path, plan: Plan) -> Iterator[bytes]:
    """Pass 2: the batch bodies in order, each the header's bytes + its records' bytes.

    Raises ``FileProblem`` if the file no longer has the records the scan found (it changed meanwhile).
    """
    targets = iter(plan.starts)
    target = next(targets, None)  # the next line that starts a part (the first: where records start)
    line = 1  # the line at ``pending``'s end
    header: bytes | None = None
    pending = bytearray()
    for chunk in read_chunks(path):
        position = 0
        while target is not None:
            offset = _line_start(chunk, position, target - line)
            if offset < 0:
                break
            pending += memoryview(chunk)[position:offset]
            position, line = offset, target
            if header is None:
                header = bytes(pending)
            else:
                yield header + pending
            pending = bytearray()
            target = next(targets, None)
        line += chunk.count(b"\n", position)
        pending += memoryview(chunk)[position:]
    if target is not None:
        raise FileProblem(f"{path} changed while it was being sent (fewer records than counted)")
    yield (header or b"") + pending


def _line_start(chunk: bytes, position: int, newlines: int) -> int:
    """The offset just after the ``newlines``-th ``\\n`` of ``chunk[position:]`` (0: ``position``); -1 if
    the chunk has fewer."""
    if newlines == 0:
        return position
    if chunk.count(b"\n", position) < newlines:
        return -1
    for _ in range(newlines):
        position = chunk.index(b"\n", position) + 1
    return position
