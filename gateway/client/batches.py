"""A CSV file (plain or gzip) split into Exchange-style batches: the header, then ``batch_rows`` records.

Two passes, each in constant memory:

1. ``scan`` counts the records as the server's own parser does (``gateway.ingest.csvparse``: the same RFC 4180
   rules, quoted newlines included) and notes the line on which every ``batch_rows``-th record starts. That
   gives ``totalBatchCount`` before anything is sent. With ``check_rows`` (``--strict``) every record is
   parsed, to find the invalid rows before sending; otherwise the lines without a ``"`` are counted from
   their bytes (several times faster) and only the rest goes through the parser.
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

from gateway.ingest.csvparse import CsvHeaderError, CsvStreamParser, fold_name

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
    checked: bool = True  # every record parsed: invalid / invalid_samples are complete (else: found so far)
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


def read_header(path: Path) -> list[str]:
    """The file's header row, read (and checked as the server checks it) without reading the rest."""
    parser = CsvStreamParser()
    try:
        for chunk in read_chunks(path):
            position = 0
            while position < len(chunk):  # a line at a time: the rows after the header are not parsed
                end = chunk.find(b"\n", position) + 1 or len(chunk)
                parser.feed(chunk[position:end])
                position = end
                if parser.header is not None:
                    return parser.header
        parser.finish()
    except CsvHeaderError as exc:
        raise FileProblem(f"{path}: {exc}") from None
    assert parser.header is not None  # finish() raises otherwise
    return parser.header


def scan(path: Path, batch_rows: int, on_chunk: Callable[[int], None] = lambda n: None, *,
         check_rows: bool = True) -> Plan:
    """Pass 1: count records and note where batches start.

    ``check_rows``: parse every record, so that ``invalid`` and ``invalid_samples`` are complete (what
    ``--strict`` needs before sending). Without it, runs of lines without a ``"`` that start where a record
    may start are counted from their bytes (``_Counter.plain``): the record count and the batch starts are
    the same (a property test checks it), but invalid rows there are left for the server to report.
    """
    counter = _Counter(batch_rows, check_rows)
    carry = b""
    try:
        for chunk in read_chunks(path):
            counter.plan.bytes += len(chunk)
            block = carry + chunk if carry else chunk
            end = block.rfind(b"\n") + 1  # whole lines only: the parser's state is then known at block ends
            if end:
                counter.lines(block, end)
                carry = block[end:]
            elif len(block) > 4 * CHUNK_BYTES:  # a very long line: the parser holds (at most) a record of it
                counter.parsed(block)
                carry = b""
            else:
                carry = block
            on_chunk(len(chunk))
        counter.finish(carry)
    except CsvHeaderError as exc:
        raise FileProblem(f"{path}: {exc}") from None
    return counter.plan


class _Counter:
    """Records and batch starts of whole lines, through the server's parser or, where it cannot matter, by
    their bytes.

    Where the parser is at a record start, each line up to the next ``"`` byte is one record, unless it is
    blank (empty or only ``\\r``, which the parser skips): nothing else can make a record span lines (only
    a quoted field can) or make a line not a record (a malformed line is an invalid row, still counted). Lines
    from one holding a ``"`` go through the parser until it is at a record start again; the parser also takes
    everything before the header.
    """

    def __init__(self, batch_rows: int, check_rows: bool) -> None:
        self.invalid: list[tuple[int, str]] = []
        self.parser = CsvStreamParser(on_invalid=lambda line, reason, raw: self.invalid.append((line, reason)))
        self.plan = Plan(header=[], starts=[], records=0, batch_rows=batch_rows, bytes=0, checked=check_rows)
        self.fast = not check_rows

    def lines(self, block: bytes, end: int) -> None:
        """Take ``block[:end]``, whole lines."""
        if not self.fast:
            self.parsed(block[:end])
            return
        position = 0
        while position < end:
            if self.parser.at_record_start():
                quote = block.find(b'"', position, end)
                stop = end if quote < 0 else max(position, block.rfind(b"\n", position, quote) + 1)
                if stop > position:
                    self.plain(block, position, stop)
                    position = stop
                    continue
                stop = block.index(b"\n", quote) + 1  # the line holding the quote
            elif self.parser.header is None:
                stop = block.index(b"\n", position) + 1  # one line at a time until the header is known
            else:  # inside a quoted field: it can only end on a line holding a quote
                quote = block.find(b'"', position, end)
                stop = end if quote < 0 else block.index(b"\n", quote) + 1
            self.parsed(block[position:stop])
            position = stop

    def finish(self, rest: bytes) -> None:
        """The bytes after the last newline (a last line without one), and the end of the file."""
        if rest:
            self.take(self.parser.feed(rest))
        self.take(self.parser.finish())
        assert self.parser.header is not None  # finish() raises otherwise
        self.plan.header = self.parser.header

    def plain(self, block: bytes, start: int, stop: int) -> None:
        """Lines ``block[start:stop]`` without a quote, at a record start: counted from their bytes."""
        first = self.parser.next_line
        count = block.count(b"\n", start, stop)
        if (block.startswith((b"\n", b"\r"), start) or block.find(b"\n\n", start, stop) >= 0
                or block.find(b"\n\r", start, stop) >= 0):  # maybe blank lines: look at each
            lines = block[start:stop].split(b"\n")[:-1]
            self.count_lines([first + k for k, line in enumerate(lines) if line.strip(b"\r")])
        else:
            plan = self.plan
            skipped = -plan.records % plan.batch_rows  # records before the next batch start
            plan.starts += range(first + skipped, first + count, plan.batch_rows)
            plan.records += count
        self.parser.skip_lines(count)

    def parsed(self, data: bytes) -> None:
        self.take(self.parser.feed(data))

    def take(self, rows: list[tuple[int, list[str]]]) -> None:
        # Within one feed, invalid rows are reported before the valid rows are returned: merge by line.
        plan, invalid = self.plan, self.invalid
        lines = sorted([line for line, _ in rows] + [line for line, _ in invalid])
        plan.invalid += len(invalid)
        plan.invalid_samples += invalid[:MAX_SAMPLES - len(plan.invalid_samples)]
        invalid.clear()
        self.count_lines(lines)

    def count_lines(self, lines: list[int]) -> None:
        """Records starting on these lines, in order."""
        plan = self.plan
        for line in lines:
            if plan.records % plan.batch_rows == 0:
                plan.starts.append(line)
            plan.records += 1


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
