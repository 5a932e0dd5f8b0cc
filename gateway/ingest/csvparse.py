"""Incremental CSV parsing of request bodies that arrive as arbitrary byte chunks.

Bodies can be gigabytes, so rows are produced as chunks arrive, in memory bounded by
``max_record_bytes``, and each ``feed()`` costs time proportional to its chunk (it runs inside the
event loop). Field splitting is done by the C ``csv`` module (default dialect); this module only
cuts the byte stream into complete lines, numbers them and validates the rows.

How a chunk is handled:

* Bytes after the last ``\\n`` wait in a tail buffer; only complete lines are decoded (``\\n`` never
  occurs inside a multibyte UTF-8 sequence, and ``\\r\\n`` split across chunks is rejoined for free).
* Fast path, the usual case: every line of the batch is one whole record with the right number of
  fields. One ``csv.reader`` call parses the batch and line numbers are simply consecutive.
* Anything else (blank lines, quoted newlines, a record still open at the end of the batch, invalid
  UTF-8, long lines, the header) goes through the general path, which walks the records one by one.
* A record whose quoted field is still open at the end of a batch is kept as parsed fields and is
  *continued* with the next lines, which are parsed with a ``"`` put in front (that puts the csv
  state machine back inside a quoted field). Nothing is parsed twice, so a long quoted field costs
  linear time, and ``max_record_bytes`` bounds what is held.

The result does not depend on how the body is chunked (the tests check this).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CsvHeaderError", "CsvStreamParser", "fold_name"]

_BOM = b"\xef\xbb\xbf"

# Appended after each batch to learn whether its last record is complete. A lone high surrogate is
# never produced by UTF-8 decoding (``surrogateescape`` yields only U+DC80..U+DCFF), so the row
# ``[_SENTINEL]`` means "all records complete"; otherwise the sentinel ended up inside an open
# quoted field.
_SENTINEL = "\ud800"
_SENTINEL_LINE = _SENTINEL + "\n"

# Bytes that are not valid UTF-8 decode (with ``surrogateescape``) to these code points.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")

# csv's own limit (131072 characters by default) is process-global and would turn long fields into
# csv.Error before our byte limits get a say; raise it once, out of the way.
_CSV_FIELD_LIMIT = 2**31 - 1
if csv.field_size_limit() < _CSV_FIELD_LIMIT:
    csv.field_size_limit(_CSV_FIELD_LIMIT)


def fold_name(name: str) -> str:
    """The one rule for comparing column names (header duplicates, ``ids``, attributes): Unicode full case
    folding (``str.casefold``), so "Straße", "STRASSE" and "strasse" are one name, while "İD" folds to
    "i̇d" (i + combining dot) and is not "id". Lives here because the push client shares this module."""
    return name.casefold()


class CsvHeaderError(ValueError):
    """The header row is missing, empty, has an empty name, duplicate names (case-insensitive) or
    invalid UTF-8. Message is for humans and is sent to clients in a 400."""


@dataclass(slots=True)
class _OpenRecord:
    """A record whose last quoted field was still open at the end of the bytes seen so far."""

    line: int  # line where the record starts
    fields: list[str]  # fields so far; the last one is the open quoted field
    nbytes: int  # bytes of its lines so far, line endings included
    raw: str  # the start of its text (at most max_raw_chars + 2 characters), for reporting it


class CsvStreamParser:
    """Parse a CSV body fed in chunks into ``(line, fields)`` data rows.

    ``line`` is the 1-based line (counting ``\n``) where the row starts. ``header`` is set once the
    first non-blank row has been parsed and checked; data rows always have ``len(header)`` fields.

    ``max_field_bytes`` limits each field (UTF-8 bytes). ``max_record_bytes`` limits a whole record,
    line endings included; by default it is what a row of maximal fields needs once the header's
    width is known (``width * (max_field_bytes + 3) + 2``, quotes and commas included), and
    ``max_field_bytes * 4 + 65536`` before that. A record crossing it is reported and dropped, and parsing resumes at the start of the
    line after the one where it crossed: an unterminated quote then costs one bounded record, not
    the rest of the body. Rows that are not returned are reported as ``on_invalid(line, reason, raw)``:
    wrong field count, invalid UTF-8, a field or record over its limit, a quoted field still open at
    the end of the body, or a bare carriage return in an unquoted field. Blank lines are skipped.
    ``raw`` is the start of the row's text as sent (line ending included, invalid bytes as
    ``surrogateescape`` code points), at most ``max_raw_chars + 2`` characters: longer means cut;
    ``raw_text(line)`` gives the same for a returned row (a caller may still find it invalid).
    ``first_row_line`` is the line of the first data row (valid or not) once one has been seen.
    """

    def __init__(self, *, max_field_bytes: int = 65536, max_record_bytes: int | None = None,
                 max_raw_chars: int = 1024, on_invalid: Callable[[int, str, str], None] | None = None) -> None:
        self._record_limit_follows_header = max_record_bytes is None
        if max_record_bytes is None:
            max_record_bytes = max_field_bytes * 4 + 65536
        if max_field_bytes < 1 or max_record_bytes < 1:
            raise ValueError("max_field_bytes and max_record_bytes must be positive")
        self.max_field_bytes = max_field_bytes
        self.max_record_bytes = max_record_bytes
        self.on_invalid = on_invalid
        self._raw_chars = max_raw_chars + 2  # room for a line ending, so that a cut can be told apart
        self.header: list[str] | None = None
        self._width = 0  # len(header) once known
        self._width_set: set[int] = set()  # {len(header)} once known
        # Lines up to this many bytes (line ending excluded) can break neither limit.
        self._safe_line_bytes = min(max_field_bytes, max_record_bytes - 1)
        self._tail = bytearray()  # bytes after the last newline seen
        self._next_line = 1  # line number of the first line in _tail
        self._open: _OpenRecord | None = None
        self._bom_pending = True  # until the first 3 bytes have been looked at
        self._skipping = False  # dropping an oversized record up to the next newline
        self.first_row_line: int | None = None
        # where the rows returned by the latest feed()/finish() came from, for raw_text(): batches that took
        # the fast path (first line, their lines) and, by line, the rows of the general path
        self._fast_batches: list[tuple[int, list[str]]] = []
        self._slow_rows: dict[int, tuple[str, list[str], int, int]] = {}

    # -- public -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[tuple[int, list[str]]]:
        """Take the next chunk of the body; return the data rows it completed."""
        if not data:
            return []
        self._forget_returned()
        data = bytes(data)
        if self._bom_pending:
            data = bytes(self._tail) + data
            self._tail.clear()
            if len(data) < 3 and _BOM.startswith(data):
                self._tail += data
                return []
            self._bom_pending = False
            if data.startswith(_BOM):
                data = data[3:]
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return []
            self._skipping = False
            self._next_line += 1
            data = data[newline + 1:]
        last_newline = data.rfind(b"\n")
        if last_newline < 0:
            self._tail += data
            self._check_tail()
            return []
        if self._tail:
            self._tail += memoryview(data)[:last_newline + 1]
            batch = bytes(self._tail)
        else:
            batch = data[:last_newline + 1]
        self._tail = bytearray(memoryview(data)[last_newline + 1:])
        rows = self._parse(batch)
        if self._tail:
            self._check_tail()
        return rows

    def finish(self) -> list[tuple[int, list[str]]]:
        """Signal the end of the body; return the remaining rows (the last line may lack a newline)."""
        self._bom_pending = False
        self._forget_returned()
        rows: list[tuple[int, list[str]]] = []
        if self._tail and not self._skipping:
            batch = bytes(self._tail)
            self._tail.clear()
            rows = self._parse(batch)
        if self._open is not None:
            record, self._open = self._open, None
            if self.header is None:
                raise CsvHeaderError(f"line {record.line}: the header row has an unterminated quoted field")
            self._report(record.line, "unterminated quoted field", record.raw)
        if self.header is None:
            raise CsvHeaderError("empty body: the first row must name the fields")
        return rows

    @property
    def next_line(self) -> int:
        """The number of the next line to be fed (once the bytes fed so far end with a newline)."""
        return self._next_line

    def at_record_start(self) -> bool:
        """Whether the bytes fed so far end exactly where a record may start: the header is known, no
        record is open, no partial line waits. Quote-free lines fed next are then one row each (or blank)."""
        return self.header is not None and self._open is None and not self._tail and not self._skipping

    def skip_lines(self, count: int) -> None:
        """Count ``count`` whole lines that the caller handled without feeding them (only at a record start)."""
        if not self.at_record_start():
            raise ValueError("lines can only be skipped at the start of a record")
        self._next_line += count

    def raw_text(self, line: int) -> str:
        """The text as sent of the row starting on ``line`` among those the latest ``feed()`` or ``finish()``
        returned: its line ending included, at most ``max_raw_chars + 2`` characters (like ``on_invalid``'s)."""
        span = self._slow_rows.get(line)
        if span is not None:
            return self._raw(*span)
        for first, parts in self._fast_batches:
            if first <= line < first + len(parts) - 1:  # the last part is the sentinel
                return (parts[line - first] + "\n")[:self._raw_chars]
        raise KeyError(f"line {line} is not a row of the latest feed")

    def _forget_returned(self) -> None:
        if self._fast_batches:
            self._fast_batches = []
        if self._slow_rows:
            self._slow_rows = {}

    def _saw_row(self, line: int) -> None:
        if self.first_row_line is None:
            self.first_row_line = line

    # -- batches of complete lines ----------------------------------------------------------------

    def _parse(self, batch: bytes) -> list[tuple[int, list[str]]]:
        """Parse complete lines (the last one may lack its newline at the end of the body).

        Until the header is known, lines go one at a time, so that the rest of the first chunk can
        take the fast path (which needs the header's width).
        """
        rows: list[tuple[int, list[str]]] = []
        while self.header is None and self._open is None:
            cut = batch.find(b"\n") + 1
            if not 0 < cut < len(batch):
                break
            rows += self._parse_lines(batch[:cut])
            batch = batch[cut:]
        return rows + self._parse_lines(batch)

    def _parse_lines(self, batch: bytes) -> list[tuple[int, list[str]]]:
        try:
            text = batch.decode("utf-8")
            valid_utf8 = True
        except UnicodeDecodeError:
            # Bad bytes become U+DC80..U+DCFF; only rows containing those are invalid.
            text = batch.decode("utf-8", "surrogateescape")
            valid_utf8 = False
        first_line = self._next_line
        parts = text.split("\n")
        ends_with_newline = parts[-1] == ""
        nlines = len(parts) - 1 if ends_with_newline else len(parts)
        self._next_line += nlines
        one_byte_chars = len(text) == len(batch)  # ASCII and/or bad bytes
        if ends_with_newline:
            parts[-1] = _SENTINEL
        else:
            parts.append(_SENTINEL)

        if valid_utf8 and self._open is None and self._width_set:
            rows = self._parse_fast(parts, one_byte_chars, len(batch))
            if rows is not None:
                if rows:
                    self._saw_row(first_line)
                    self._fast_batches.append((first_line, parts))
                return list(zip(range(first_line, first_line + len(rows)), rows))

        lines = [part + "\n" for part in parts[:nlines]]
        if not ends_with_newline:
            lines[-1] = parts[nlines - 1]
        return self._parse_slow(lines, first_line, valid_utf8, one_byte_chars, len(batch))

    def _parse_fast(self, parts: list[str], one_byte_chars: bool, nbytes: int) -> list[list[str]] | None:
        """Rows of a batch where every line is one valid record, else None (use the general path).

        ``parts`` are the lines without their newlines, followed by the sentinel line.
        """
        if nbytes > self._safe_line_bytes:
            longest = max(map(len, parts))
            if longest * (1 if one_byte_chars else 4) > self._safe_line_bytes:
                return None
        try:
            rows = list(csv.reader(parts))
        except csv.Error:
            return None
        if len(rows) != len(parts):  # some record spans lines or is left open
            return None
        rows.pop()  # the sentinel's
        if set(map(len, rows)) != self._width_set:  # wrong widths or blank lines
            return None
        return rows

    def _parse_slow(self, lines: list[str], first_line: int, valid_utf8: bool, one_byte_chars: bool,
                    nbytes: int) -> list[tuple[int, list[str]]]:
        """Walk the records of a batch one by one, continuing an open record if there is one."""
        out: list[tuple[int, list[str]]] = []
        held = self._open.nbytes if self._open is not None else 0
        watch_records = held + nbytes > self.max_record_bytes
        watch_fields = held + nbytes > self.max_field_bytes
        position = 0
        while position < len(lines):
            position = self._scan(lines, position, first_line, out, valid_utf8, one_byte_chars,
                                  watch_records, watch_fields)
        return out

    def _scan(self, lines: list[str], position: int, first_line: int, out: list[tuple[int, list[str]]],
              valid_utf8: bool, one_byte_chars: bool, watch_records: bool, watch_fields: bool) -> int:
        """Parse records from ``lines[position:]``; return where to restart (``len(lines)``: done).

        A restart is needed after an oversized record, to resynchronise on a line boundary.
        """
        nlines = len(lines)
        source = lines[position:]
        source.append(_SENTINEL_LINE)
        continued, self._open = self._open, None
        if continued is not None:
            source[0] = '"' + source[0]  # resume inside the open quoted field
        reader = csv.reader(source)
        while True:
            consumed = reader.line_num
            error: csv.Error | None = None
            try:
                row = next(reader)
            except StopIteration:
                return nlines
            except csv.Error as exc:
                row, error = [], exc
            start = position + consumed
            if start == nlines:  # the sentinel row: every record was complete
                return nlines
            end = position + reader.line_num  # lines[start:end] hold the record
            is_open = end > nlines
            stop = min(end, nlines)
            line = continued.line if continued is not None else first_line + start
            held = continued.nbytes if continued is not None else 0
            head = continued.raw if continued is not None else ""

            size = held + _bytes_of(lines, start, stop, one_byte_chars) if watch_records or is_open else 0
            if size > self.max_record_bytes:
                self._reject_oversized(line, self._raw(head, lines, start, stop))
                crossing = start  # the line on which the record went over the limit
                while True:
                    held += _bytes_of(lines, crossing, crossing + 1, one_byte_chars)
                    if held > self.max_record_bytes:
                        break
                    crossing += 1
                if crossing + 1 < stop:
                    return crossing + 1  # the reader went past it: restart on the next line
                continued = None
                continue

            if error is not None:
                self._reject(line, _describe(error), self._raw(head, lines, start, stop))
                continued = None
                continue
            merged = continued is not None
            if merged:
                row = continued.fields[:-1] + [continued.fields[-1] + row[0]] + row[1:]
                continued = None
            if is_open:
                row[-1] = row[-1][:-len(_SENTINEL_LINE)]
                self._open = _OpenRecord(line, row, size, self._raw(head, lines, start, stop))
                return nlines
            if not row:  # blank line
                continue
            if self.header is None:
                self._set_header(line, row)
                continue
            reason = self._problem(row, check_utf8=merged or not valid_utf8, check_fields=merged or watch_fields)
            if reason is None:
                self._saw_row(line)
                self._slow_rows[line] = (head, lines, start, stop)
                out.append((line, row))
            else:
                self._report(line, reason, self._raw(head, lines, start, stop))

    # -- checks -----------------------------------------------------------------------------------

    def _problem(self, row: list[str], *, check_utf8: bool, check_fields: bool) -> str | None:
        if check_utf8 and _has_bad_bytes(row):
            return "invalid UTF-8"
        if len(row) != self._width:
            return f"expected {self._width} fields, got {len(row)}"
        if check_fields and _has_long_field(row, self.max_field_bytes):
            return f"field exceeds {self.max_field_bytes} bytes"
        return None

    def _set_header(self, line: int, names: list[str]) -> None:
        if _has_bad_bytes(names):
            raise CsvHeaderError(f"line {line}: the header row is not valid UTF-8")
        if any("\x00" in name for name in names):
            raise CsvHeaderError(f"line {line}: the header row contains a NUL character")
        if _has_long_field(names, self.max_field_bytes):
            raise CsvHeaderError(f"line {line}: a header name exceeds {self.max_field_bytes} bytes")
        seen: dict[str, str] = {}
        for number, name in enumerate(names, 1):
            if not name.strip():
                raise CsvHeaderError(f"line {line}: header field {number} is empty; every field needs a name")
            key = fold_name(name)
            if key in seen:
                raise CsvHeaderError(f"line {line}: duplicate field name {name!r} "
                                     f"(same as {seen[key]!r}; names are case-insensitive)")
            seen[key] = name
        self.header = names
        self._width = len(names)
        self._width_set = {len(names)}
        if self._record_limit_follows_header:
            widest_row = len(names) * (self.max_field_bytes + 3) + 2
            self.max_record_bytes = max(self.max_record_bytes, widest_row)
            self._safe_line_bytes = min(self.max_field_bytes, self.max_record_bytes - 1)

    def _check_tail(self) -> None:
        """Drop the record being accumulated once it is too large, and skip to the next line."""
        record = self._open
        size = (record.nbytes if record is not None else 0) + len(self._tail)
        if size > self.max_record_bytes:
            line = record.line if record is not None else self._next_line
            tail = bytes(self._tail[:self._raw_chars * 4]).decode("utf-8", "surrogateescape")
            raw = ((record.raw if record is not None else "") + tail)[:self._raw_chars]
            self._open = None
            self._tail = bytearray()
            self._skipping = True
            self._reject_oversized(line, raw)

    def _raw(self, head: str, lines: list[str], start: int, stop: int) -> str:
        """The start of a record's text: ``head`` (from earlier batches), then ``lines[start:stop]``."""
        parts = [head]
        size = len(head)
        for index in range(start, min(stop, len(lines))):
            if size >= self._raw_chars:
                break
            parts.append(lines[index])
            size += len(lines[index])
        return "".join(parts)[:self._raw_chars]

    def _reject_oversized(self, line: int, raw: str) -> None:
        self._reject(line, f"record exceeds {self.max_record_bytes} bytes (unterminated quote?)", raw)

    def _reject(self, line: int, reason: str, raw: str) -> None:
        if self.header is None:
            raise CsvHeaderError(f"line {line}: bad header row: {reason}")
        self._report(line, reason, raw)

    def _report(self, line: int, reason: str, raw: str) -> None:
        self._saw_row(line)
        if self.on_invalid is not None:
            self.on_invalid(line, reason, raw)


def _bytes_of(lines: list[str], start: int, stop: int, one_byte_chars: bool) -> int:
    """UTF-8 size of ``lines[start:stop]`` (bad bytes count as the one byte they were)."""
    if one_byte_chars:
        return sum(map(len, lines[start:stop]))
    return sum(len(line.encode("utf-8", "surrogateescape")) for line in lines[start:stop])


def _has_bad_bytes(row: list[str]) -> bool:
    return any(map(_ESCAPED_BYTE.search, row))


def _has_long_field(row: list[str], limit: int) -> bool:
    for field in row:
        chars = len(field)
        # A character is at most 4 UTF-8 bytes: only encode when it could matter.
        if chars > limit or (chars * 4 > limit and len(field.encode("utf-8", "surrogateescape")) > limit):
            return True
    return False


def _describe(error: csv.Error) -> str:
    if "new-line character" in str(error):
        return "malformed CSV: carriage return inside an unquoted field"
    return f"malformed CSV: {error}"
