"""From a streamed request body to COPY records: gunzip, parse, validate, normalise, count.

Nothing here buffers the body: chunks are read from ``request.content`` as they arrive, parsed
incrementally, and turned into ``(ord, identity, attrs)`` records that asyncpg's COPY pulls from an
async generator, so the client, the parser and PostgreSQL run as one pipeline with back-pressure.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import heapq
import io
import re
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import StreamReader

from gateway.ingest.csvparse import CsvHeaderError, CsvStreamParser, fold_name
from gateway.errors import BadRequest, ClientIdle, PayloadTooLarge

MAX_INVALID_SAMPLES = 10
SUPPRESSED = "suppressed"  # the reason of a row whose identity is on the endpoint's suppression list
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream
_DECOMPRESS_STEP = 1024 * 1024  # inflate at most this much at a time: a gzip bomb stops at the body limit
# parse at most this much between two looks at ``pause`` (bounds the rejected rows gathered in between) and
# in one turn of the event loop (about 0.5 ms of CPU with the records made of it: see parse_turn; 64 KiB
# steps gave a p99 of 29–57 ms to GET /v1/segments during a 1M-row push, 16 KiB 16–21 ms, the push no slower)
_PARSE_STEP = 16 * 1024
PARSE_SLOTS = 1  # bodies that parse a step in the same turn of the event loop (parse_turn)
_parse_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
# a staged REPLACE batch counts its distinct identities in memory up to this many (else in SQL, see Upload)
MAX_COUNTED_IDENTITIES = 200_000
_COPY_ESCAPED = re.compile(r"[\\\t\n\r]")  # what COPY's text format escapes (NUL rows are rejected before)


@asynccontextmanager
async def parse_turn() -> AsyncIterator[None]:
    """One step of parsing (``_PARSE_STEP`` bytes and the records made of them), in a turn of the event loop
    of its own, taken by at most ``PARSE_SLOTS`` bodies at a time (per event loop).

    Parsing is CPU on the event loop. With each body parsing a whole chunk at a time, four uploads in flight
    held the loop for tens of milliseconds per turn, and a ``GET /v1/segments`` needs a few turns (issue 15).
    Now the waiting bodies yield to everything else: a turn holds at most ``PARSE_SLOTS`` steps, whatever the
    number of uploads. Parsing does not slow down: it is one thread's CPU either way.
    """
    loop = asyncio.get_running_loop()
    gate = _parse_gates.get(loop)
    if gate is None:
        gate = _parse_gates[loop] = asyncio.Semaphore(PARSE_SLOTS)
    async with gate:
        await asyncio.sleep(0)  # a turn of its own: what was ready before runs first
        yield


def _copy_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _plain(chunk: bytes) -> bool:
    """No field parsed from ``chunk`` needs escaping in COPY text: a newline or carriage return inside a
    field needs quotes (an unquoted one ends the row or is rejected)."""
    return b'"' not in chunk and b"\\" not in chunk and b"\t" not in chunk


def member_line(identity: str, attrs: Sequence[str | None]) -> str:
    """``(identity, attrs)`` as one line of COPY's text format (asyncpg's binary encoding of a text[] costs
    the gateway 4–5× the CPU): every element quoted; escaping only when a field needs it."""
    if None not in attrs:
        joined = '","'.join(attrs)
        if (joined.count('"') == 2 * len(attrs) - 2 and _COPY_ESCAPED.search(joined) is None
                and _COPY_ESCAPED.search(identity) is None):
            return f'{identity}\t{{"{joined}"}}\n'
    elements = ",".join("NULL" if value is None else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
                        for value in attrs)
    return f"{_copy_escape(identity)}\t{_copy_escape('{' + elements + '}')}\n"


def staging_line(batch: int, line: int, identity: str, attrs: Sequence[str | None]) -> str:
    """``(batch, ord, identity, attrs)`` as one line of COPY's text format (see member_line)."""
    return f"{batch}\t{line}\t{member_line(identity, attrs)}"


_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_sha256 = hashlib.sha256
IDENTITY_HASHINGS = ("sha256",)  # a segment's ``identityHashing`` (None: identities stored as sent)


def hash_identity(identity: str) -> str:
    """An identity as a hashing segment stores it: the lowercase hex SHA-256 of its UTF-8 bytes; a value that
    already is 64 hex characters is taken to be a hash and kept as sent (pre-hashed lists).

    Runs once per row of a push into a hashing segment, on the event loop: about 0.4 µs, nearly all of it
    the digest (issue 18's bench); the common case avoids the ``surrogateescape`` encoder."""
    if len(identity) == 64 and _HEX_DIGEST.fullmatch(identity):
        return identity
    try:
        data = identity.encode()
    except UnicodeEncodeError:  # bytes that were not UTF-8, kept as lone surrogates
        data = identity.encode("utf-8", "surrogateescape")
    return _sha256(data).hexdigest()


def lowercases(identity_attribute: str) -> bool:
    """Whether identities of this column are lower-cased: it is an email column (its name holds "email")."""
    return "email" in fold_name(identity_attribute)


def normalise_identity(identity: str, lowercase: bool, hashing: bool = False) -> str:
    """The one rule for identities, applied in Python only (SQL's ``lower`` under ``COLLATE "C"`` folds only
    ASCII, and ``btrim`` knows fewer spaces than ``str.strip``): surrounding whitespace trimmed, lower-cased
    (``str.lower``) when the identity column is an email column, then, for a hashing segment
    (``identityHashing: sha256``), hashed (``hash_identity``). An empty identity stays empty (invalid)."""
    identity = identity.strip()
    if lowercase:
        identity = identity.lower()
    return hash_identity(identity) if hashing and identity else identity


@dataclasses.dataclass(frozen=True)
class ColumnPlan:
    """How one upload's header maps onto its segment's attributes.

    ``source_index[j]`` is the header column holding segment attribute ``j`` (``-1``: not in this upload).
    """

    identity_attribute: str
    attributes: tuple[str, ...]
    identity_index: int
    lowercase_identity: bool
    source_index: tuple[int, ...]
    width: int  # columns in this upload's header
    hashing: bool = False  # the segment stores identities hashed (normalise_identity)

    def sql_names(self) -> dict[str, str]:
        """SQL fragments for the ``incoming`` table of this upload, made from column numbers only.

        ``incoming`` has one text column per CSV column (c0, c1, …) instead of a text[]: plain text
        columns are much cheaper to COPY; the segment-ordered attribute array is built in SQL.
        """
        attrs = ", ".join(f"c{i}" if i >= 0 else "NULL" for i in self.source_index)
        return {
            "incoming_columns": ", ".join(f"c{i} text COLLATE \"C\" NOT NULL" for i in range(self.width)),
            "identity": f"c{self.identity_index}",
            "attrs": f"ARRAY[{attrs}]::text[]",
        }

    def copy_columns(self) -> tuple[str, ...]:
        return ("ord", *(f"c{i}" for i in range(self.width)))


@dataclasses.dataclass(frozen=True)
class ColumnRules:
    """What one upload's header may do to its segment's columns."""

    ids: str | None  # the ``ids`` query parameter (None: not given)
    max_attributes: int  # GATEWAY_MAX_ATTRIBUTES: the most columns a header has, attributes a segment gets
    extends: bool = True  # False for REMOVE: only the identity column is read, the others never become attributes


def plan_columns(header: Sequence[str], identity_attribute: str | None, attributes: Sequence[str],
                 rules: ColumnRules, hashing: str | None = None) -> ColumnPlan:
    """Choose the identity column and extend the segment's attributes with this header's new names.

    First upload: the ``ids`` column, else a column whose name contains "email", else the first column.
    Later uploads: ``ids``, else the segment's identity attribute by name, else the first column.
    Names compare case-insensitively; attributes keep their first-seen spelling and order. ``hashing``: the
    segment's identity hashing (segments.identity_hashing).

    400 before anything is applied when the header is wider than ``max_attributes`` or would take the
    segment past it: every column is a column of the upload's table, every attribute one of each export's
    select list, and PostgreSQL bounds both. A segment already past it (the limit was lowered) still takes
    uploads that add nothing.
    """
    limit = rules.max_attributes
    if len(header) > limit:
        raise BadRequest(f"the header has {len(header)} columns; at most {limit} are allowed "
                         "(GATEWAY_MAX_ATTRIBUTES); nothing was applied", code="too_many_attributes")
    ids = rules.ids
    folded = [fold_name(name) for name in header]
    identity_index = 0
    if ids and fold_name(ids) in folded:
        identity_index = folded.index(fold_name(ids))
    elif identity_attribute is None:
        identity_index = next((i for i, name in enumerate(folded) if "email" in name), 0)
    elif fold_name(identity_attribute) in folded:
        identity_index = folded.index(fold_name(identity_attribute))
    if identity_attribute is None:
        identity_attribute = header[identity_index]

    merged = list(attributes)
    if rules.extends:
        known = {fold_name(name) for name in attributes}
        merged += [name for name in header if fold_name(name) not in known]
        if len(merged) > max(limit, len(attributes)):
            raise BadRequest(f"the header would give the segment {len(merged)} attributes; at most {limit} are "
                             "allowed (GATEWAY_MAX_ATTRIBUTES); nothing was applied", code="too_many_attributes")
    position = {name: i for i, name in enumerate(folded)}
    return ColumnPlan(identity_attribute=identity_attribute, attributes=tuple(merged),
                      identity_index=identity_index, lowercase_identity=lowercases(header[identity_index]),
                      source_index=tuple(position.get(fold_name(name), -1) for name in merged), width=len(header),
                      hashing=hashing is not None)


async def idle_chunks(content: StreamReader, timeout: float | None) -> AsyncIterator[bytes]:
    """A request body's chunks as they arrive; 408 ``client_idle`` when none comes for ``timeout`` seconds
    (``None``: no bound). A slow client is fine as long as something arrives."""
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await content.readany()
        except TimeoutError:
            raise ClientIdle(f"the client sent nothing for {timeout:g} s; nothing was applied") from None
        if not chunk:
            return
        yield chunk


async def _replay(held: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``held``, then what ``rest`` yields."""
    for chunk in held:
        yield chunk
    async for chunk in rest:
        yield chunk


class Upload:
    """One CSV request body being streamed: its header, then its records, with counts as it goes.

    Every invalid row is also passed to ``on_reject(line, reason, raw)`` if given (gateway.ingest.rejects), ``raw``
    being the start of its text as sent.

    Invalid rows (``on_reject``, ``invalid_samples``) are numbered by the body's lines, or, with
    ``first_line`` (the ``firstLine`` batch parameter), by the pushed file's: the body's first data row is
    on line ``first_line`` and a row starting k lines after it on ``first_line + k``.
    """

    def __init__(self, content: StreamReader, *, gzipped: bool, max_body_bytes: int, max_field_bytes: int,
                 on_reject: Callable[[int, str, str], None] | None = None,
                 idle_timeout: float | None = None, first_line: int | None = None) -> None:
        self._content = content
        self.first_line = first_line
        self._idle_timeout = idle_timeout  # 408 when no byte arrives for this long (gateway.http.clients)
        self._on_reject = on_reject
        self._inflater = zlib.decompressobj(_GZIP_WBITS) if gzipped else None
        self._max_body_bytes = max_body_bytes
        self._parser = CsvStreamParser(max_field_bytes=max_field_bytes, on_invalid=self._invalid)
        self._ahead: list[tuple[int, list[str]]] = []  # rows parsed but not yet turned into records
        self._has_nul = False  # sticky: a row may start before the chunk that completes it
        self._plain = True  # sticky: no '"', backslash or tab seen yet, so no field needs escaping in COPY text
        self._finished = False  # the parser's finish() was called (the body has ended)
        self._unparsed = memoryview(b"")  # the rest of the chunk being parsed
        self.done = False  # every record has been produced
        self._chunks = self._body_chunks()
        self.body_bytes = 0
        self.received = 0
        self.invalid = 0
        self.suppressed = 0  # of the invalid rows, those on the suppression list
        # the distinct valid identities produced by ``records(staged_batch=…)``; None past MAX_COUNTED_IDENTITIES
        self.identities: set[str] | None = set()
        self._samples: list[tuple[int, str]] = []  # max-heap (negated lines) of the first invalid rows

    @property
    def invalid_samples(self) -> list[dict[str, Any]]:
        """The first invalid rows by line (rows are rejected in two places, not always in line order)."""
        return [{"line": -line, "reason": reason} for line, reason in sorted(self._samples, reverse=True)]

    async def read_header(self) -> list[str]:
        """Read until the header row is complete; 400 if it is missing, empty or has duplicate names."""
        try:
            while self._parser.header is None:
                if not self._unparsed:
                    chunk = await anext(self._chunks, None)
                    if chunk is None:
                        self._finished = True
                        self._ahead.extend(self._parser.finish())
                        break
                    self._has_nul |= b"\x00" in chunk
                    self._plain = self._plain and _plain(chunk)
                    self._unparsed = memoryview(chunk)
                async with parse_turn():
                    self._ahead.extend(self._parser.feed(self._unparsed[:_PARSE_STEP]))
                self._unparsed = self._unparsed[_PARSE_STEP:]
        except CsvHeaderError as exc:
            raise BadRequest(str(exc), code="invalid_header") from None
        if self._parser.header is None:
            raise BadRequest("the body has no header row", code="invalid_header")
        return self._parser.header

    async def read_ahead(self, limit: int) -> bool:
        """Read the rest of the body into memory while it holds at most ``limit`` bytes (gunzipped); whether
        it all came. Then nothing that follows waits for the client: the caller may take locks first and
        parse under them (gateway.ingest.apply.add_direct). Else what was read is parsed first, as it came."""
        held: list[bytes] = []
        size = len(self._unparsed)
        ended = False
        while size <= limit:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                ended = True
                break
            held.append(chunk)
            size += len(chunk)
        self._chunks = _replay(held, self._chunks)
        return ended

    async def records(self, plan: ColumnPlan, pause: Callable[[], bool] | None = None,
                      staged_batch: int | None = None, member_text: bool = False) -> AsyncIterator[Any]:
        """``(line, field0, field1, …)`` for each valid row (identity normalised), for COPY into ``incoming``;
        with ``staged_batch`` k, one piece of COPY text (``staging_line(k, line, identity, attrs)`` of each
        of its rows, attrs in the segment's attribute order, the plan's) at a time, for COPY straight into a
        REPLACE session's staging table, and ``identities`` gathered; with ``member_text``, pieces of
        ``member_line(identity, attrs)``, for COPY straight into a members table (gateway.ingest.apply.add_direct).

        Stops early, between two pieces of the body (at most ``_PARSE_STEP`` bytes each), when ``pause()``
        says so (the caller stores the rejected rows, then calls again to go on); ``done`` tells when the
        body is through.
        """
        while not self.done:
            rows, self._ahead = self._ahead, []
            if staged_batch is None and not member_text:
                for record in self._records_of(rows, plan, self._has_nul, None):
                    yield record
            elif member_text and rows:
                yield "".join(self._records_of(rows, plan, self._has_nul, None, member_text=True)).encode()
            elif rows:
                yield "".join(self._records_of(rows, plan, self._has_nul, staged_batch)).encode()
                if self.identities is not None and len(self.identities) > MAX_COUNTED_IDENTITIES:
                    self.identities = None
            if pause is not None and pause():
                return
            if self._unparsed:
                async with parse_turn():
                    self._ahead = self._parser.feed(self._unparsed[:_PARSE_STEP])
                self._unparsed = self._unparsed[_PARSE_STEP:]
                continue
            chunk = await anext(self._chunks, None)
            if chunk is None:
                if self._finished:
                    self.done = True
                else:
                    self._ahead = self._parser.finish()
                    self._finished = True
                continue
            self._has_nul |= b"\x00" in chunk
            self._plain = self._plain and _plain(chunk)
            self._unparsed = memoryview(chunk)

    def _records_of(self, rows: list[tuple[int, list[str]]], plan: ColumnPlan, has_nul: bool,
                    staged_batch: int | None, member_text: bool = False):
        identity_index = plan.identity_index
        lowercase = plan.lowercase_identity
        hashing = plan.hashing
        source = plan.source_index
        in_header_order = source == tuple(range(plan.width))  # attrs are the fields as they are
        plain = self._plain and in_header_order
        quoted_comma = '","'
        identities = self.identities
        self.received += len(rows)
        for line, fields in rows:
            if has_nul and any("\x00" in field for field in fields):
                self.reject(line, "contains a NUL character", fields)
                continue
            identity = normalise_identity(fields[identity_index], lowercase, hashing)
            if not identity:
                self.reject(line, f"empty identity ({plan.identity_attribute})", fields)
                continue
            fields[identity_index] = identity
            if member_text:
                if plain:  # member_line's fast path, inlined
                    yield f'{identity}\t{{"{quoted_comma.join(fields)}"}}\n'
                else:
                    yield member_line(identity, fields if in_header_order else [
                        fields[i] if i >= 0 else None for i in source])
                continue
            if staged_batch is None:
                yield line, *fields
                continue
            if identities is not None:
                identities.add(identity)
            if plain:  # staging_line's fast path, inlined: no field needs escaping, none is missing
                yield f'{staged_batch}\t{line}\t{identity}\t{{"{quoted_comma.join(fields)}"}}\n'
            else:
                yield staging_line(staged_batch, line, identity, fields if in_header_order else [
                    fields[i] if i >= 0 else None for i in source])

    def suppress(self, line: int, fields: Sequence[str]) -> None:
        """A valid row whose identity is on the endpoint's suppression list (gateway.ingest.apply.drop_suppressed)."""
        self.suppressed += 1
        self.reject(line, SUPPRESSED, fields)

    def reject(self, line: int, reason: str, fields: Sequence[str]) -> None:
        """A row already counted as received (parsed into ``fields``) turned out invalid after all.

        Its raw text is the row as sent when the parser still has it (a row of the piece being turned into
        records); a row dropped later, under the segment's lock (``lock_and_register``), is re-serialised
        from its fields."""
        raw = ""
        if self._on_reject is not None:
            try:
                raw = self._parser.raw_text(line)
            except KeyError:
                out = io.StringIO()
                csv.writer(out, lineterminator="").writerow(fields)
                raw = out.getvalue()
        self._invalid(line, reason, raw, counted=True)

    def _invalid(self, line: int, reason: str, raw: str, counted: bool = False) -> None:
        """A row that is not stored: counted, sampled with its line and reason, and passed on."""
        if self.first_line is not None:
            first_row_line = self._parser.first_row_line
            assert first_row_line is not None  # this row, if no other before it
            line += self.first_line - first_row_line
        if self._on_reject is not None:
            self._on_reject(line, reason, raw)
        if not counted:
            self.received += 1  # rows the parser rejected never reach _records_of
        self.invalid += 1
        if len(self._samples) < MAX_INVALID_SAMPLES:
            heapq.heappush(self._samples, (-line, reason))
        elif -self._samples[0][0] > line:
            heapq.heapreplace(self._samples, (-line, reason))

    async def _body_chunks(self) -> AsyncIterator[bytes]:
        async for raw in idle_chunks(self._content, self._idle_timeout):
            if self._inflater is None:
                yield self._account(raw)
                continue
            for data in self._gunzip(raw):
                yield self._account(data)
        if self._inflater is not None and not self._inflater.eof:
            raise BadRequest("the gzip body ends inside a member (truncated, or bytes after the last member "
                             "that are not gzip)", code="invalid_gzip")

    def _gunzip(self, raw: bytes) -> Iterator[bytes]:
        """Inflate ``raw`` and whatever earlier chunks left, at most ``_DECOMPRESS_STEP`` at a time.

        A gzip body is a series of members (RFC 1952, 2.2): ``cat a.gz b.gz``, pigz and streaming writers
        make several. When a member ends, the bytes after it start the next one, so bytes after the last
        member that are not gzip are an error, never silently dropped.
        """
        while True:
            member = self._inflater
            assert member is not None
            if member.eof:
                raw = member.unused_data + raw
                if not raw:
                    return
                member = self._inflater = zlib.decompressobj(_GZIP_WBITS)
            elif not raw and not member.unconsumed_tail:
                return
            source = member.unconsumed_tail + raw if raw else member.unconsumed_tail
            raw = b""
            try:
                data = member.decompress(source, _DECOMPRESS_STEP)
            except zlib.error:
                raise BadRequest("the body is not valid gzip", code="invalid_gzip") from None
            if data:
                yield data

    def _account(self, data: bytes) -> bytes:
        self.body_bytes += len(data)
        if self.body_bytes > self._max_body_bytes:
            raise PayloadTooLarge(f"the body is larger than {self._max_body_bytes} bytes; nothing was applied")
        return data
