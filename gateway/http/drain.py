"""Graceful drain: stop accepting, let the requests in flight finish, then let aiohttp close the rest.

aiohttp's own shutdown marks every connection closing first, and a closing connection drops the data
that still arrives, so an upload in flight would never see the rest of its body. We therefore close the
listening sockets ourselves and wait for our in-flight count to reach zero before ``runner.cleanup()``.

Closing the listening sockets does not close kept-alive connections: from the moment the drain begins, a
request arriving on one is not handled but answered 503 ``shutting_down`` (``Retry-After``), and every
answer — those of the requests still running too — carries ``Connection: close`` (gateway.http.middleware), so
the client retries on a new connection, which reaches another process (or this one, restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from aiohttp import web

log = logging.getLogger(__name__)


class InFlight:
    """The requests this process is handling (counted by the outermost middleware)."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False  # set when the drain begins: no request starts after it
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):  # not wait_for, which can lose a cancellation (gateway.db.listen)
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


async def drain(sites: list[web.BaseSite], in_flight: InFlight, timeout: float) -> None:
    """Refuse new requests, close the listening sockets, then wait up to ``timeout`` for the requests in
    flight. ``draining`` is set before the first ``await``: in the same step as the caller's decision."""
    in_flight.draining = True
    for site in sites:
        await site.stop()
    if in_flight.count:
        log.info("draining %d request(s) in flight (up to %.0f s)", in_flight.count, timeout)
    if not await in_flight.wait_idle(timeout):
        log.warning("%d request(s) still running after %.0f s: cutting them", in_flight.count, timeout)
