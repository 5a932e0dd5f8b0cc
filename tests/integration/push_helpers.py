"""Helpers for the push-path tests: CSV bodies, push requests, and what PostgreSQL holds afterwards.

Reading the stored state goes straight to the tables (``segments``, ``audience.members_<id>``,
``replace_sessions``, the ``staging`` schema) so that a test checks what was stored, not what the
gateway says it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import io
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg

from gateway.app import create_app
from gateway.settings import Settings
from tests.helpers import copy_in_progress, eventually, members_table
from tests.conftest import AUTH, GatewayTestServer

METHOD_OF = {"ADD": "POST", "REPLACE": "PUT", "REMOVE": "DELETE"}
CSV_TYPE = {"Content-Type": "text/csv"}
DROPPED = 0  # Reply.status when the connection closed without a response


# -- bodies -------------------------------------------------------------------------------------------

def csv_body(header: Sequence[str], rows: Iterable[Sequence[str]], newline: str = "\n") -> bytes:
    """An RFC 4180 body (quoting only where needed), header first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


async def chunked(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    """A streamed (chunked) body; ``pause`` between parts lets the server act on each part first."""
    for number, part in enumerate(parts):
        if number and pause:
            await asyncio.sleep(pause)
        yield part


# -- requests -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Reply:
    status: int
    text: str
    content_type: str

    @property
    def body(self) -> Any:
        return json.loads(self.text)

    @property
    def result(self) -> dict[str, Any]:
        assert self.status == 200, (self.status, self.text)
        assert self.body["responseStatus"] == "success", self.text
        return self.body["result"]

    @property
    def counts(self) -> dict[str, Any]:
        """The Exchange fields of a push result (extra fields left out)."""
        keys = ("segmentId", "numReceived", "numInvalid", "numAdded", "numRemoved")
        return {key: value for key, value in self.result.items() if key in keys}

    def assert_failure(self, status: int, code: str | None = None) -> None:
        """``status`` with the JSON failure envelope (never a bare text or HTML page)."""
        assert self.status == status, (self.status, self.text)
        assert self.content_type == "application/json", (self.content_type, self.text)
        body = self.body
        assert body["responseStatus"] == "failure", self.text
        assert body["error"]["message"], self.text
        if code is not None:
            assert body["error"]["code"] == code, self.text


async def create_segment(client, name: str = "pushed", headers: dict[str, str] = AUTH) -> str:
    response = await client.post("/v1/segments", json={"name": name}, headers=headers)
    assert response.status == 200, await response.text()
    return (await response.json())["result"]["segmentId"]


def data_path(segment_id: str, total: int | None = None, number: int | None = None, **params: Any) -> str:
    query = {key: value for key, value in
             {"totalBatchCount": total, "currentBatchNumber": number, **params}.items() if value is not None}
    return f"/v1/segments/{segment_id}/data" + (f"?{urlencode(query)}" if query else "")


async def push(client, segment_id: str, body: bytes | str | AsyncIterator[bytes], action: str = "ADD", *,
               total: int | None = None, number: int | None = None, query: str | None = None,
               headers: dict[str, str] | None = None, skip_auto_headers: Sequence[str] = (),
               **params: Any) -> Reply:
    """One push; ``query`` (raw text) replaces the batch parameters when given."""
    if isinstance(body, str):
        body = body.encode()
    if isinstance(body, bytes):
        body = io.BytesIO(body)  # large ``bytes`` bodies make the client warn
    path = data_path(segment_id, total, number, **params) if query is None else \
        f"/v1/segments/{segment_id}/data?{query}"
    try:
        response = await client.request(METHOD_OF[action], path, data=body, skip_auto_headers=skip_auto_headers,
                                        headers={**AUTH, **CSV_TYPE, **(headers or {})})
        return Reply(response.status, await response.text(), response.content_type)
    except aiohttp.ClientConnectionError as exc:  # the server dropped the connection: no answer at all
        return Reply(DROPPED, f"no response: {exc!r}", "")


async def push_ok(client, segment_id: str, body: bytes | str, action: str = "ADD", **options: Any) -> dict[str, Any]:
    """A push that must succeed; its result."""
    return (await push(client, segment_id, body, action, **options)).result


@contextlib.asynccontextmanager
async def streaming_push(client, db: asyncpg.Connection, segment_id: str, head: bytes,
                         rest: bytes) -> AsyncIterator[asyncio.Task[Reply]]:
    """A push of ``head`` + ``rest``, held after ``head`` while the block runs: the block starts once the
    push streams its rows (its header read and planned, its COPY into ``incoming`` running); ``rest`` is
    sent when it ends. Yields the push's task."""
    release = asyncio.Event()

    async def held_body() -> AsyncIterator[bytes]:
        yield head
        await release.wait()
        yield rest

    task = asyncio.create_task(push(client, segment_id, held_body()))
    try:
        await eventually(lambda: copy_in_progress(db), "the push to stream its rows")
        yield task
    finally:
        release.set()


async def overtaken_push(client, db: asyncpg.Connection, segment_id: str, head: bytes, rest: bytes,
                         first: str, **first_options: Any) -> Reply:
    """A push that another push (``first``, which must succeed) overtakes while it streams: the race
    ``lock_and_register`` settles."""
    async with streaming_push(client, db, segment_id, head, rest) as slow:
        await push_ok(client, segment_id, first, **first_options)
    return await slow


async def app_client(aiohttp_client, settings: Settings, **changes: Any):
    """A test client of a new app instance (``aiohttp_client`` fixture), with some settings changed."""
    return await aiohttp_client(GatewayTestServer(create_app(dataclasses.replace(settings, **changes))))


# -- what is stored -----------------------------------------------------------------------------------

async def raw_members(db: asyncpg.Connection, segment_id: str) -> dict[str, list[str | None]]:
    """identity → attrs as stored (the table does not exist before the first upload: empty)."""
    table = members_table(segment_id)
    if await db.fetchval("SELECT to_regclass($1)", table) is None:
        return {}
    return {row["identity"]: list(row["attrs"]) for row in await db.fetch(f"SELECT identity, attrs FROM {table}")}


async def attributes(db: asyncpg.Connection, segment_id: str) -> list[str]:
    return list(await db.fetchval("SELECT attributes FROM segments WHERE id = $1", int(segment_id)))


async def audience(db: asyncpg.Connection, segment_id: str) -> dict[str, dict[str, str | None]]:
    """identity → {attribute: value}; attributes a member has no value for are None."""
    names = await attributes(db, segment_id)
    return {identity: {name: attrs[i] if i < len(attrs) else None for i, name in enumerate(names)}
            for identity, attrs in (await raw_members(db, segment_id)).items()}


async def identities(db: asyncpg.Connection, segment_id: str) -> set[str]:
    return set(await raw_members(db, segment_id))


async def staging_tables(db: asyncpg.Connection) -> list[str]:
    return [row["tablename"] for row in
            await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'staging' ORDER BY tablename")]


async def sessions(db: asyncpg.Connection, segment_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT id, status, total_batches, source_segment_id FROM replace_sessions "
                          "WHERE segment_id = $1 ORDER BY id", int(segment_id))
    return [dict(row) for row in rows]


async def snapshot(db: asyncpg.Connection, segment_id: str) -> dict[str, Any]:
    """Everything a push may change: members, the segment's columns and size, REPLACE state."""
    row = await db.fetchrow("SELECT attributes, identity_attribute, member_count FROM segments WHERE id = $1",
                            int(segment_id))
    return {"members": await raw_members(db, segment_id), "segment": dict(row) if row else None,
            "sessions": await sessions(db, segment_id), "staging": await staging_tables(db)}


async def seeded_segment(client, db: asyncpg.Connection) -> tuple[str, dict[str, Any]]:
    """A segment with two members (``email,name``), and its snapshot."""
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email,name\na@x.com,Ann\nb@x.com,Bob\n")
    return segment_id, await snapshot(db, segment_id)


# A body that would change the seeded segment whatever the method: a new column, a new member, and
# changed attributes for a member (REMOVE would remove a@x.com, REPLACE would drop b@x.com).
INTRUSIVE_BODY = b"email,name,extra\nnew@x.com,New,1\na@x.com,Changed,2\n"
