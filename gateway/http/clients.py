"""Slow and hostile clients: what a stalled client may hold, and when it is cut.

A push or a pull holds a connection of the main pool (and a transaction) for as long as its client sends or
reads, so a few stalled clients could take every connection and, with them, the whole server. Hence:

- Data slots (``DataSlots``) bound the uploads and downloads holding a main-pool connection at once; the
  rest wait up to ``GATEWAY_DATA_SLOT_WAIT``, then get 503 ``server_busy`` with ``Retry-After``. The slots
  leave connections for the export workers and the rest; key lookups, ``/readyz`` and short metadata reads
  have their own small pool (``state.CONTROL_POOL``), so they answer whatever the data requests do.
- A client that sends nothing or reads nothing for ``GATEWAY_CLIENT_IDLE_TIMEOUT`` is cut: the request
  headers by aiohttp's keep-alive timer (``runner_options``: they must be complete within it), the body by a
  bound on each read (``gateway.ingest.upload.idle_chunks``: 408 ``client_idle``, the transaction rolls
  back), the response when a
  write moves no byte for it (``write_or_cut``: the connection is aborted and the write raises, which
  cancels the COPY behind it and gives its connection back).
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiohttp import web

from gateway.errors import ClientIdle, ServerBusy
from gateway.settings import Settings

try:
    import fcntl
    import termios
except ImportError:  # not on POSIX: the connection's own buffer only
    termios = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

IDLE_CHECKS = 4  # looks per idle timeout at a waiting write's progress
_OUTQ = getattr(termios, "TIOCOUTQ", None) if termios is not None else None  # SIOCOUTQ on Linux


def runner_options(settings: Settings) -> dict[str, Any]:
    """What the aiohttp runner (``serve`` and the tests' server alike) needs from the settings: a connection
    whose request headers are not complete within the idle timeout (or idle between requests) is closed."""
    return {"keepalive_timeout": settings.client_idle_timeout}


class DataSlots:
    """At most ``count`` uploads and downloads hold a main-pool connection at once (one process)."""

    def __init__(self, count: int, wait: float) -> None:
        self.count = count
        self.in_use = 0
        self._wait = wait
        self._free = asyncio.Semaphore(count)

    @asynccontextmanager
    async def connection(self, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
        """A slot, then a connection of ``pool``; 503 ``server_busy`` if no slot frees within the wait."""
        try:
            async with asyncio.timeout(self._wait):
                await self._free.acquire()
        except TimeoutError:
            raise ServerBusy(f"all {self.count} upload and download slots are busy; retry shortly",
                             retry_after=max(1, math.ceil(self._wait))) from None
        self.in_use += 1
        try:
            async with pool.acquire() as conn:
                yield conn
        finally:
            self.in_use -= 1
            self._free.release()


async def write_or_cut(request: web.BaseRequest, timeout: float, pending: Awaitable[None]) -> None:
    """Await a write to the client. While it waits (the client is not reading fast enough), look a few times
    per ``timeout`` whether the client received any byte (``_unsent`` shrank): a slow reader is waited for, but one
    that read nothing for ``timeout`` seconds is cut: the connection is aborted and ``ConnectionResetError``
    raised (what a vanished client raises)."""
    loop = asyncio.get_running_loop()
    write = asyncio.ensure_future(pending)
    try:
        await asyncio.sleep(0)  # the write's first step (FIFO): its bytes are now in the send buffer
        unsent, moved_at = _unsent(request), loop.time()
        while not (await asyncio.wait({write}, timeout=timeout / IDLE_CHECKS))[0]:
            if _unsent(request) < unsent:  # only the client's reading shrinks it while this write waits
                unsent, moved_at = _unsent(request), loop.time()
            elif loop.time() - moved_at >= timeout:
                log.warning("%s %s: the client read nothing for %g s; connection cut", request.method,
                            request.path, timeout)
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError(f"the client read nothing for {timeout:g} s")
        write.result()
    finally:
        write.cancel()  # nothing if it is done


def _unsent(request: web.BaseRequest) -> int:
    """Bytes of the answer the client has not received yet: in the connection's buffer, and (on Linux) in
    the kernel's send queue, which autotuning can grow to megabytes and which the kernel refills only in
    large steps; only the client's reading (its acknowledgements) makes the sum shrink."""
    transport = request.transport
    if transport is None:
        return 0
    unsent = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if _OUTQ is not None and sock is not None:
        try:
            unsent += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
        except OSError:
            pass
    return unsent


def idle_writer(request: web.BaseRequest, write: Callable[[bytes], Awaitable[None]],
                timeout: float) -> Callable[[bytes], Awaitable[None]]:
    """``write`` bounded by ``write_or_cut``."""

    async def bounded(data: bytes) -> None:
        await write_or_cut(request, timeout, write(data))

    return bounded
