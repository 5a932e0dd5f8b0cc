"""Export jobs to files (kind ``ExportFile``, ``/api/export/jobs``): run by the job queue
(gateway.jobs.queue) as every kind is, each one writes a segment's audience (some of its attributes, as
csv, csv.gz or ndjson) to a file in ``GATEWAY_EXPORT_DIR``.

- One consistent snapshot: a REPEATABLE READ transaction whose first statement share-locks the segment's
  row (as a direct pull does: no REPLACE swaps its table meanwhile), then one ``COPY … TO STDOUT``
  (gateway.db.csvcopy) streamed to disk chunk by chunk: memory stays constant whatever the size.
- Atomic: the file is written under a temp name in the same directory (``.export-<job>-<attempt>.tmp``),
  fsynced, renamed to ``export-<job>-<attempt>.<format>`` and the directory fsynced, then the job completes
  in a transaction that records that name. A crash leaves at most a temp file, never a partial file under a
  final name; the sweep removes what no job wants (``sweep_export_dir``).
- Progress (rows written) goes to the job's row about once a second; the same statement tells the writer
  that the job was canceled or taken over (it then stops, removing its temp file).
- csv is the same bytes as the direct pull of the same columns (same query, same header line); csv.gz is
  that through zlib; ndjson is one JSON object per member, made by PostgreSQL (``json_object``).
- An optional PQL expression (gateway.segmentation) keeps the members it is true for; it is checked when
  the job is created and compiled again in the snapshot (against the attributes and segments as they are).
- Erasure (gateway.jobs.erasure): a completed file holding an erased identity is deleted and its job marked
  erased (``file_holds`` searches it). A job still writing when an erasure went over its segment learns it
  when it completes (the segment's ``erased_by`` differs from the one its snapshot read) and deletes its file.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import datetime
import gzip
import hashlib
import io
import logging
import os
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from gateway.db.csvcopy import columns_at, copy_csv_out, header_line, scan_in_order, streaming_transaction
from gateway.db.names import sql, table_names
from gateway.db.queries import QUERIES
from gateway.errors import BadRequest, Conflict, GatewayError, NotFound
from gateway.ids import parse_int
from gateway.ingest.csvparse import fold_name
from gateway.jobs import queue
from gateway.segmentation import insegment, pql
from gateway.segmentation.compiler import Compiled, compile_predicate
from gateway.segmentation.pql import ExpressionError
from gateway.ops import metrics
from gateway.privacy.erase import record_files
from gateway.settings import Settings
from gateway.db.status import rows_affected

log = logging.getLogger(__name__)

KIND_NAME = "ExportFile"
SNAPSHOT_KIND = "ExportSegmentData"  # /v1 export jobs (gateway.jobs.exports) write their snapshot here too
FORMATS = {"csv": "text/csv", "csv.gz": "application/gzip", "ndjson": "application/x-ndjson"}
STATUSES = {"waiting": "NEW", "running": "PROCESSING", "complete": "SUCCEEDED", "error": "FAILED",
            "canceled": "CANCELLED"}
PROGRESS_SECONDS = 1.0  # how often a running job writes its progress (and learns it was canceled)
BUFFER_BYTES = 1 << 20  # what the writer gathers before it hands a block to its thread
LOCK_TRIES = 10  # a push committing while the snapshot waits for the segment's row: start again
GZIP_LEVEL = 6  # gzip's own default

_FINAL = re.compile(r"^export-(\d+)-(\d+)\.(?:csv|csv\.gz|ndjson)$")
_TEMP = re.compile(r"^\.export-(\d+)-(\d+)\.tmp$")
# /v1 export jobs' snapshot files (gateway.jobs.exports.file_name), and an erasure's rewrite in progress
_SNAPSHOT = re.compile(r"^(?:job-(\d+)-(\d+)(?:-e\d+)?\.csv|\.job-(\d+)-(\d+)\.tmp)$")


class Gone(GatewayError):
    status = 410
    code = "export_expired"


class Erased(Gone):
    code = "export_erased"


class ExportFailed(Exception):
    """The job cannot be done as asked (its segment or an attribute is gone); the message is its reason."""


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ExportFailed):
        return str(exc)
    if isinstance(exc, OSError):
        return "export failed: the export file could not be written; the gateway's log has the details"
    if isinstance(exc, asyncpg.PostgresError):
        return "export failed: the database could not copy the segment's audience; the gateway's log has the details"
    return queue.internal_failure(exc)


# -- requests --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Projection:
    names: list[str]  # as the segment spells them
    positions: list[int]  # 1-based, in attrs


def project(attributes: Sequence[str], fields: Sequence[str] | None) -> Projection:
    """The attributes ``fields`` names (every one when None), compared by ``fold_name``; ValueError naming
    the first unknown one."""
    if fields is None:
        return Projection(list(attributes), list(range(1, len(attributes) + 1)))
    index = {fold_name(name): i for i, name in enumerate(attributes, start=1)}
    positions = []
    for field in fields:
        position = index.get(fold_name(field))
        if position is None:
            raise ValueError(field)
        positions.append(position)
    return Projection([attributes[i - 1] for i in positions], positions)


def parse_fields(value: Any) -> list[str] | None:
    """``fields``: attribute names, comma-separated (or a list); None or empty: every attribute."""
    if value is None:
        return None
    if isinstance(value, str):
        names = [name.strip() for name in value.split(",")]
        if names == [""]:
            return None
    elif isinstance(value, list) and all(isinstance(name, str) for name in value):
        names = [name.strip() for name in value]
    else:
        raise BadRequest("fields must be attribute names separated by commas", code="invalid_fields")
    if any(not name for name in names):
        raise BadRequest("fields has an empty attribute name", code="invalid_fields")
    if len({fold_name(name) for name in names}) != len(names):
        raise BadRequest("fields names an attribute twice", code="invalid_fields")
    return names


async def compile_filter(conn: asyncpg.Connection, endpoint_id: int, attributes: Sequence[str], expression: str,
                         first_param: int) -> Compiled:
    """The SQL predicate (over ``p``, parameters from ``$first_param``) of a filter's PQL expression on a
    segment with these attributes; ``inSegment`` names a segment of the same endpoint (share-locked, as the
    export's own segment). ExpressionError (with its position) for what does not parse or is unknown."""
    node = pql.parse(expression)
    arguments = pql.segments_used(node)
    await insegment.share_lock(conn, endpoint_id, (), arguments)
    segment_tables = (await insegment.segment_tables(conn, endpoint_id, arguments)).tables
    index = {fold_name(name): i for i, name in enumerate(attributes, start=1)}
    return compile_predicate(node, attribute_index=lambda name: index.get(fold_name(name)),
                             segment_tables=segment_tables, now=datetime.datetime.now(datetime.timezone.utc),
                             first_param=first_param)


async def create(conn: asyncpg.Connection, endpoint_id: int, segment_id: int, fields: list[str] | None,
                 file_format: str, expression: str | None = None) -> asyncpg.Record:
    """A new job (waiting); 404 for a segment that is not the endpoint's, 400 naming an unknown field, 400
    with its position for an expression that does not parse or names what the segment does not have."""
    async with conn.transaction():
        segment = await conn.fetchrow(QUERIES["segment_columns"], segment_id, endpoint_id)
        if segment is None:
            raise NotFound(f"segment {segment_id} does not exist", code="segment_not_found")
        attributes = segment["attributes"] or []
        try:
            project(attributes, fields)
        except ValueError as exc:
            raise BadRequest(f"segment {segment_id} has no attribute {exc.args[0]!r} (fields)",
                             code="unknown_field", extra={"field": exc.args[0]}) from None
        if expression is not None:
            try:
                await compile_filter(conn, endpoint_id, attributes, expression, 1)
            except ExpressionError as exc:
                raise BadRequest(f"filter.expression: {exc.message} (at position {exc.position})",
                                 code="invalid_expression", extra={"position": exc.position}) from None
        row = await queue.enqueue(conn, KIND, endpoint_id, segment_id)
        await conn.execute(QUERIES["export_file_insert"], row["id"], fields, file_format, expression)
    return await get(conn, endpoint_id, row["id"])


def unknown_job(text: str) -> NotFound:
    """Another endpoint's job is answered exactly like one that does not exist."""
    return NotFound(f"export job {text} does not exist", code="export_job_not_found")


def parse_job_id(text: str) -> int:
    job_id = parse_int(text)
    if job_id is None:
        raise unknown_job(text)
    return job_id


async def get(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, job_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["export_file_get"], job_id, endpoint_id, KIND_NAME)
    if row is None:
        raise unknown_job(str(job_id))
    return row


async def listing(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, status: str | None,
                  before: int | None, limit: int, offset: int) -> list[asyncpg.Record]:
    return await conn.fetch(QUERIES["export_file_list"], endpoint_id, KIND_NAME, status, before, limit, offset)


async def cancel(conn: asyncpg.Connection, settings: Settings, endpoint_id: int, job_id: int) -> asyncpg.Record:
    """Cancel the job and remove its file (a running job's writer stops within a second and removes its temp
    file); a job that already failed or was canceled stays as it is."""
    canceled = await queue.cancel(conn, KIND, endpoint_id, job_id)
    row = await get(conn, endpoint_id, job_id)  # 404 if it is not this endpoint's
    if canceled:
        remove_file(settings.export_path, row["file_name"])  # the name a completed job recorded, if any
    return row


def file_path(settings: Settings, row: Any) -> Path:
    """The job's file, to download; 409 until the job succeeded, 410 once it expired or was canceled."""
    if row["erased_by"] is not None:
        raise Erased(f"the file of export job {row['id']} was deleted by erasure {row['erased_by']}")
    if row["status"] == "canceled" or row["expired"] or row["data_dropped_at"] is not None:
        raise Gone(f"the file of export job {row['id']} is no longer available")
    if row["status"] != "complete":
        raise Conflict(f"export job {row['id']} is {STATUSES[row['status']]}; its file is ready once it SUCCEEDED",
                       code="export_not_ready")
    path = settings.export_path / row["file_name"]
    if not path.is_file():
        raise Gone(f"the file of export job {row['id']} is not in this gateway's export directory "
                   "(GATEWAY_EXPORT_DIR must be shared by every gateway process)")
    return path


# -- writing ---------------------------------------------------------------------------------------------

class CsvRows:
    """Counts CSV rows in a stream of chunks: a newline ends a row unless it is inside quotes (a quoted
    field may hold newlines; a doubled quote inside one toggles twice)."""

    def __init__(self) -> None:
        self.rows = 0
        self._quoted = False

    def feed(self, chunk: bytes) -> None:
        if b'"' not in chunk:
            if not self._quoted:
                self.rows += chunk.count(b"\n")
            return
        parts = chunk.split(b'"')
        outside = parts[1::2] if self._quoted else parts[::2]
        self.rows += sum(part.count(b"\n") for part in outside)
        self._quoted ^= (len(parts) - 1) % 2 == 1


class LineRows:
    """Counts ndjson rows: one newline each."""

    def __init__(self) -> None:
        self.rows = 0

    def feed(self, chunk: bytes) -> None:
        self.rows += chunk.count(b"\n")


class FileWriter:
    """Writes a file under a temp name with constant memory: chunks are gathered into blocks of
    ``BUFFER_BYTES``, each compressed (csv.gz), hashed and written by a thread while the next one fills
    (one block in flight: back-pressure to the COPY). ``finish`` makes it durable and visible at once."""

    def __init__(self, temp: Path, compress: bool, digest: bool = True) -> None:
        self.temp = temp
        self.bytes = 0
        self._sha = hashlib.sha256() if digest else None
        self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if compress else None
        self._buffer = bytearray()
        self._pending: asyncio.Future | None = None
        self._fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= BUFFER_BYTES:
            await self._hand_over(final=False)

    async def _hand_over(self, final: bool) -> None:
        block, self._buffer = bytes(self._buffer), bytearray()
        if self._pending is not None:
            await self._pending
        self._pending = asyncio.ensure_future(asyncio.to_thread(self._write_block, block, final))

    def _write_block(self, block: bytes, final: bool) -> None:
        if self._zlib is not None:
            block = self._zlib.compress(block) + (self._zlib.flush() if final else b"")
        if self._sha is not None:
            self._sha.update(block)
        view = memoryview(block)
        while view:
            view = view[os.write(self._fd, view):]
        self.bytes += len(block)

    async def finish(self, final: Path) -> None:
        """Write what is left, fsync, rename to ``final``, fsync the directory."""
        await self._hand_over(final=True)
        await self._pending
        await asyncio.to_thread(self._durable_rename, final)

    def _durable_rename(self, final: Path) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.temp, final)
        directory = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    @property
    def sha256(self) -> str | None:
        return self._sha.hexdigest() if self._sha is not None else None

    async def discard(self) -> None:
        """Stop and remove the temp file (after the block in flight, if any)."""
        if self._pending is not None:
            with contextlib.suppress(BaseException):
                await self._pending
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)


def remove_file(directory: Path, name: str | None) -> None:
    if name:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)


@dataclasses.dataclass(frozen=True)
class Written:
    """A file written from one snapshot, durable under its final name in the export directory."""
    name: str
    rows: int
    bytes: int
    sha256: str | None  # None when not asked for
    attributes: list[str]  # its columns, as the segment spells them
    erased_by: int | None  # the segment's last erasure as of the snapshot (see ``erased_since``)


Progress = Callable[[queue.Lease, int], Awaitable[None]]


async def write_file(lease: queue.Lease, task: Any, name: str, temp: str, progress: Progress, *,
                     digest: bool = True) -> Written:
    """Write the segment's audience as ``task`` asks (its ``fields``, ``format`` and ``expression``) to
    ``temp`` in the export directory, then make it durable as ``name`` (see the module's docstring).
    ``progress`` gets the rows written about once a second and raises to stop the writer; ``digest``: hash
    it (SHA-256) as it is written."""
    directory = lease.settings.export_path
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    writer = FileWriter(directory / temp, compress=task["format"] == "csv.gz", digest=digest)
    try:
        rows, attributes, erased_by = await _write_snapshot(lease, task, writer, progress)
        await writer.finish(directory / name)
    except BaseException:
        await writer.discard()
        raise
    return Written(name, rows, writer.bytes, writer.sha256, attributes, erased_by)


async def _write_snapshot(lease: queue.Lease, task: Any, writer: FileWriter,
                          progress: Progress) -> tuple[int, list[str], int | None]:
    """Copy the segment's audience (``task``) into ``writer`` from one snapshot; the rows written, the
    file's columns, and the segment's last erasure as of that snapshot."""
    counter = CsvRows() if task["format"] != "ndjson" else LineRows()
    last = time.monotonic() - PROGRESS_SECONDS  # the first rows are reported at once, then once a second

    async def sink(chunk: bytes) -> None:
        nonlocal last
        await writer.write(chunk)
        counter.feed(chunk)
        if time.monotonic() - last >= PROGRESS_SECONDS:
            await progress(lease, counter.rows)
            last = time.monotonic()

    for attempt in range(1, LOCK_TRIES + 1):
        async with lease.pool.acquire() as conn:
            try:
                async with streaming_transaction(conn, isolation="repeatable_read"):
                    info = await conn.fetchrow(QUERIES["segment_export_info"], lease.segment_id, lease.endpoint_id)
                    erased_by = await conn.fetchval(QUERIES["export_file_erased_by"], lease.segment_id)
                    rows, attributes = await _copy(conn, lease, info, task, writer, sink)
                    return rows, attributes, erased_by
            except asyncpg.SerializationError:  # raised by the lock, before anything was written
                if attempt == LOCK_TRIES:
                    raise
    raise AssertionError("unreachable")


async def _copy(conn: asyncpg.Connection, lease: queue.Lease, info: Any, task: Any, writer: FileWriter,
                sink: Callable[[bytes], Awaitable[None]]) -> tuple[int, list[str]]:
    if info is None:
        raise ExportFailed(f"export failed: segment {lease.segment_id} no longer exists")
    attributes = info["attributes"] or []
    try:
        projection = project(attributes, task["fields"])
    except ValueError as exc:
        raise ExportFailed(f"export failed: segment {lease.segment_id} no longer has attribute "
                           f"{exc.args[0]!r}") from None
    ndjson = task["format"] == "ndjson"
    args: list[object] = [projection.names] if ndjson else []
    predicate = None
    if task["expression"] is not None:
        try:
            compiled = await compile_filter(conn, lease.endpoint_id, attributes, task["expression"], len(args) + 1)
        except ExpressionError as exc:
            raise ExportFailed(f"export failed: filter.expression: {exc.message} "
                               f"(at position {exc.position})") from None
        predicate, args = compiled.sql, [*args, *compiled.params]
    if not ndjson:
        await writer.write(header_line(projection.names))
    if not await conn.fetchval(QUERIES["job_members_exist"], table_names(lease.segment_id)["members"]):
        return 0, projection.names  # a segment nothing was ever pushed to
    await scan_in_order(conn)
    name = ("export_segment_ndjson" if ndjson else "export_segment_rows") + ("_where" if predicate else "")
    fragments = {"columns": columns_at(projection.positions), **({"predicate": predicate} if predicate else {})}
    status = await copy_csv_out(conn, sql(name, segment_id=lease.segment_id, **fragments), sink, args,
                                verbatim=ndjson)
    return rows_affected(status), projection.names


async def report_progress(lease: queue.Lease, rows: int) -> None:
    """Store the rows written so far; JobLost if the job was canceled or taken over meanwhile."""
    if await lease.pool.fetchval(QUERIES["export_file_progress"], lease.id, lease.owner, lease.attempts,
                                 rows) is None:
        raise queue.JobLost()


async def run(lease: queue.Lease) -> None:
    """Write the job's file and complete the job, recording the file, in one transaction."""
    started = time.perf_counter()
    task = await lease.pool.fetchrow(QUERIES["export_file_task"], lease.id)
    directory = lease.settings.export_path
    written = await write_file(lease, task, f"export-{lease.id}-{lease.attempts}.{task['format']}",
                               f".export-{lease.id}-{lease.attempts}.tmp", report_progress)
    rows = written.rows
    try:
        async with lease.pool.acquire() as conn, conn.transaction():
            await conn.execute(QUERIES["export_file_result"], lease.id, rows, written.name, written.bytes,
                               written.sha256, lease.settings.export_ttl)
            erasure = await erased_since(conn, lease.segment_id, written.erased_by)
            if erasure is not None:
                await erase_file(conn, directory, lease.id, written.name, erasure, lease.segment_id)
            await lease.complete(conn)
    except BaseException:
        remove_file(directory, written.name)  # canceled or taken over meanwhile: the file is nobody's
        raise
    if erasure is not None:
        log.info("export job %d complete, its file deleted: erasure %d went over segment %d after its snapshot",
                 lease.id, erasure, lease.segment_id)
        return
    metrics.EXPORT_ROWS.inc(rows)
    log.info("export job %d complete: %d rows of segment %d, %s, %d bytes in %.1f s", lease.id, rows,
             lease.segment_id, written.name, written.bytes, time.perf_counter() - started)


async def erased_since(conn: asyncpg.Connection, segment_id: int, seen: int | None) -> int | None:
    """In the completing transaction: the erasure that went over the segment since the snapshot read ``seen``
    (None: none did). Waits for an erasure holding the segment; one that starts later waits for this
    transaction, then finds the job complete and searches its file."""
    now = await conn.fetchrow(QUERIES["export_file_erasure_check"], segment_id)
    return now["erased_by"] if now is not None and now["erased_by"] != seen else None


async def erase_file(conn: asyncpg.Connection, directory: Path, job_id: int, name: str, erasure: int,
                     segment_id: int) -> bool:
    """In a transaction: the job's file deleted by ``erasure`` and counted in its result; False if the job
    had no file any more (canceled, expired or erased meanwhile)."""
    if await conn.fetchval(QUERIES["export_file_erased"], job_id, erasure) is None:
        return False
    remove_file(directory, name)
    await record_files(conn, erasure, segment_id, 1)
    return True


# What may stand between two values in an export file: CSV separators and quotes, JSON punctuation.
_SEPARATORS = b',"\r:{}'
_TOKENS = bytes.maketrans(_SEPARATORS, b"\n" * len(_SEPARATORS))
# a value holding one of these may be written split or escaped: it is not looked for as a token
_UNSPLITTABLE = re.compile(r'[,"\r\n:{}\\\x00-\x1f\x7f-\U0010ffff]')
SCAN_BYTES = 1 << 20


def _open(path: Path, file_format: str) -> Any:
    return gzip.open(path, "rb") if file_format == "csv.gz" else open(path, "rb")  # noqa: SIM115


def file_holds(path: Path, file_format: str, identity_attribute: str, values: set[str]) -> bool | None:
    """Whether the export file holds one of ``values`` in its identity column (read as it was written,
    stopping at the first one found); None when it has no identity column (its fields left it out). A file
    that is not there holds nothing. Blocking: run it in a thread.

    csv and csv.gz first get a fast pass (``_may_hold``: is any value one of the file's tokens, wherever it
    stands?), about twice as fast as the CSV parser: most files hold none of an erasure's identities and are
    read only by it. ndjson lines are parsed by orjson, faster than that pass."""
    wanted = fold_name(identity_attribute)
    try:
        with _open(path, file_format) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            if file_format == "ndjson":
                first = text.readline()
                if not first:
                    return False
                column = next((name for name in orjson.loads(first) if fold_name(name) == wanted), None)
            else:
                header = next(csv.reader(text), [])
                column = next((i for i, name in enumerate(header) if fold_name(name) == wanted), None)
        if column is None:
            return None if file_format == "ndjson" or header else False
        if file_format == "ndjson":
            with _open(path, file_format) as raw:
                return any(orjson.loads(line)[column] in values for line in raw)
        if not _may_hold(path, file_format, values):
            return False
        with _open(path, file_format) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            reader = csv.reader(text)
            next(reader, None)
            return any(row[column] in values for row in reader if len(row) > column)
    except FileNotFoundError:
        return False


def _records(raw: Any) -> Any:
    """The CSV records of a binary file, each as its exact bytes (a quoted field may hold newlines)."""
    record = b""
    for line in raw:
        record += line
        if record.count(b'"') % 2 == 0:
            yield record
            record = b""
    if record:
        yield record


def _field(record: bytes, column: int) -> str | None:
    if b'"' not in record:
        fields = record.rstrip(b"\r\n").split(b",", column + 1)
        return fields[column].decode() if column < len(fields) else None
    row = next(csv.reader(io.StringIO(record.decode(), newline="")), [])
    return row[column] if column < len(row) else None


def rewrite_without(path: Path, temp: Path, identity_attribute: str, values: set[str]) -> int:
    """Copy the csv file ``path`` to ``temp`` (durably) without the rows whose identity column holds one
    of ``values``, every other byte as it was; the rows left out. Blocking: run it in a thread."""
    wanted = fold_name(identity_attribute)
    removed = 0
    with open(path, "rb") as raw, open(temp, "xb") as out:
        records = _records(raw)
        header = next(records, b"")
        out.write(header)
        names = next(csv.reader(io.StringIO(header.decode(), newline="")), [])
        column = next((i for i, name in enumerate(names) if fold_name(name) == wanted), None)
        for record in records:
            if column is not None and _field(record, column) in values:
                removed += 1
            else:
                out.write(record)
        out.flush()
        os.fsync(out.fileno())
    return removed


def _may_hold(path: Path, file_format: str, values: set[str]) -> bool:
    """Whether one of ``values`` is a token of the file (its bytes split at ``_SEPARATORS`` and newlines):
    a CSV field or a JSON string that is exactly a value is one. True (the exact parse decides) when a value
    holds a separator, a quote, a backslash, a control or a non-ASCII character (``_UNSPLITTABLE``)."""
    if any(_UNSPLITTABLE.search(value) for value in values):
        return True
    wanted = {value.encode() for value in values}
    rest = b""
    with _open(path, file_format) as raw:
        while block := raw.read(SCAN_BYTES):
            tokens = (rest + block).translate(_TOKENS).split(b"\n")
            rest = tokens.pop()  # may continue in the next block
            if not wanted.isdisjoint(tokens):
                return True
    return rest in wanted


async def mark_dropped(conn: asyncpg.Connection, job_id: int) -> None:
    """A cancel's discard: the file is gone (the caller removes it; see ``cancel``)."""
    await conn.execute(QUERIES["job_mark_dropped"], job_id)


KIND = queue.Kind(KIND_NAME, run, discard=mark_dropped, failure_reason=failure_reason)


# -- sweeping ---------------------------------------------------------------------------------------------

async def sweep_export_files(pool: asyncpg.Pool, settings: Settings) -> int:
    """Remove the files of expired and canceled jobs, then whatever the export directory holds that no job
    wants: temp files of writers that died, files of jobs that were deleted. Files named otherwise are left
    alone. The number of files removed."""
    directory = settings.export_path
    removed = 0
    for row in await pool.fetch(QUERIES["jobs_expired_data"], KIND_NAME):
        async with pool.acquire() as conn, conn.transaction():
            remove_file(directory, await conn.fetchval(QUERIES["export_file_name"], row["id"]))
            await mark_dropped(conn, row["id"])
        removed += 1
    try:
        names = await asyncio.to_thread(os.listdir, directory)
    except FileNotFoundError:
        return removed
    for pattern, kind, query in ((_FINAL, KIND_NAME, "export_file_states"), (_TEMP, KIND_NAME, "export_file_states"),
                                 (_SNAPSHOT, SNAPSHOT_KIND, "export_job_file_states")):
        found = [(name, match) for name in names if (match := pattern.match(name))]
        if not found:
            continue
        ids = sorted({int(next(group for group in match.groups() if group)) for _, match in found})
        states = {row["id"]: row for row in await pool.fetch(QUERIES[query], ids, kind)}
        for name, match in found:
            job_id, attempt = [int(group) for group in match.groups() if group is not None][:2]
            if not _wanted(name, attempt, states.get(job_id)):
                remove_file(directory, name)
                removed += 1
    return removed


def _wanted(name: str, attempt: int, state: Any) -> bool:
    if state is None:
        return False
    if state["writing"] and state["attempts"] == attempt:
        return True  # being written, or renamed and about to complete
    return bool(state["keeps_file"]) and state["file_name"] == name
