"""Helpers for the push/pull client tests: the real app on a real port, a proxy in front of it that
injects network and server faults, and running the clients in-process with their output captured.

The proxy forwards every request to the real gateway and records it; a fault set with ``fail`` replaces
the next matching exchanges: an HTTP status (answered by the proxy with the failure envelope), ``"drop"``
(close the connection without an answer), ``"lose"`` (forward, let the gateway act, then drop the
answer) or ``"cut"`` (forward, then close the connection half-way through the answer's body).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.client.http import RetryPolicy
from gateway.client.pull import PullOptions, pull
from gateway.client.push import PushOptions, push
from tests.conftest import ADMIN_KEY

FAST_RETRY = RetryPolicy(attempts=4, base=0.01, cap=0.05)
HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclasses.dataclass
class Fault:
    action: int | str
    times: int
    when: Callable[[web.Request], bool]
    retry_after: str | None = None


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.delay = 0.0  # seconds added before forwarding (makes concurrency observable)
        self.in_flight = 0
        self.max_in_flight = 0
        self._session: aiohttp.ClientSession | None = None

    def fail(self, action: int | str, *, times: int = 1, when: Callable[[web.Request], bool] = lambda r: True,
             retry_after: str | None = None) -> None:
        self.faults.append(Fault(action, times, when, retry_after))

    def data_requests(self, method: str | None = None) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.endswith("/data") and method in (None, seen.method)]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        app.cleanup_ctx.append(self._client)
        return app

    async def _client(self, app: web.Application) -> AsyncIterator[None]:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        yield
        await self._session.close()

    def _fault_for(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.when(request):
                fault.times -= 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, dict(request.query), dict(request.headers)))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._forward(request)
        finally:
            self.in_flight -= 1

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        fault = self._fault_for(request)
        body = await request.read()
        self.seen[-1].body = body
        if self.delay:
            await asyncio.sleep(self.delay)
        if fault is not None and isinstance(fault.action, int):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return web.json_response({"responseStatus": "failure", "error": {"code": "injected",
                                                                             "message": "injected failure"}},
                                     status=fault.action, headers=headers)
        if fault is not None and fault.action == "drop":
            return _drop(request)
        assert self._session is not None
        headers = {name: value for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body or None,
                                         headers=headers) as upstream:
            if fault is not None and fault.action == "lose":
                await upstream.read()
                return _drop(request)
            response = web.StreamResponse(status=upstream.status, headers={
                name: value for name, value in upstream.headers.items()
                if name.lower() not in HOP_BY_HOP or name.lower() == "content-length"})
            await response.prepare(request)
            cut_at = (upstream.content_length or 0) // 2 if fault is not None and fault.action == "cut" else None
            sent = 0
            async for chunk in upstream.content.iter_chunked(4096):
                if cut_at is not None and sent + len(chunk) > cut_at:
                    await response.write(chunk[:max(cut_at - sent, 1)])
                    return _drop(request, response)
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response


def _drop(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Close the client's connection now: it gets no (complete) answer."""
    assert request.transport is not None
    request.transport.close()
    return response if response is not None else web.Response()


# -- running the clients ------------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    code: int
    out: str
    err: str


async def run_push(url: str, path: Path, **options: Any) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    code = await push(PushOptions(url=url, key=options.pop("key", ADMIN_KEY), path=path,
                                  retry=options.pop("retry", FAST_RETRY), **options), out, err)
    return Outcome(code, out.getvalue(), err.getvalue())


async def run_pull(url: str, segment: str, output: Path, **options: Any) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    code = await pull(PullOptions(url=url, key=options.pop("key", ADMIN_KEY), segment=segment, output=output,
                                  retry=options.pop("retry", FAST_RETRY), poll_max=0.05, **options), out, err)
    return Outcome(code, out.getvalue(), err.getvalue())


def server_url(server: Any) -> str:
    return f"http://{server.host}:{server.port}"


def write_csv(path: Path, header: list[str], rows: list[list[str]], newline: str = "\n") -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(out.getvalue().encode())
    return path
