"""One LISTEN connection that stays up: reconnects with backoff and notices a half-open connection.

A LISTEN connection is idle: if its server stops answering without closing the socket (a frozen backend,
a dropped network path, a NAT that forgot the flow), nothing fails and notifications silently stop. So,
besides asyncpg's termination listener (a clean close is noticed at once), the connection runs a query
every ``ping_seconds`` that must answer within ``ping_timeout``; otherwise it is abandoned and replaced.
Notifications sent while nothing listened are lost: ``on_connect`` runs after every (re)connection so the
caller can resynchronise (the key cache empties itself, the export workers look for work once).

Waits with a bound use ``asyncio.timeout``, never ``asyncio.wait_for``: on Python 3.11, ``wait_for`` returns
the awaited result when a cancellation arrives just as it completes, and the cancellation is lost — a task
stopped at that instant (``serve``'s shutdown) then runs on, and the shutdown waits for it for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from gateway.db.pool import CONNECTION_ERRORS
from gateway.db.queries import QUERIES

log = logging.getLogger(__name__)

PING_SECONDS = 10.0
PING_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)  # then 5 s between attempts
CLOSE_TIMEOUT = 2.0


@dataclass
class Listener:
    """LISTEN on ``channel`` on a dedicated connection named ``name`` until ``run()`` is cancelled, calling
    ``on_notify(payload)`` for each notification and ``on_connect()`` after each (re)connection."""

    url: str
    channel: str
    name: str  # its application_name, seen in pg_stat_activity
    on_notify: Callable[[str], object]
    on_connect: Callable[[], object] = lambda: None
    ping_seconds: float = PING_SECONDS
    ping_timeout: float = PING_TIMEOUT
    connected: bool = field(default=False, init=False)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT,
                                             server_settings={"application_name": self.name})
            except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                log.warning("%s: cannot LISTEN (%s); retrying in %s s", self.name, exc, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            try:
                await self._listen(conn)
            except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("%s: lost the LISTEN connection (%s); reconnecting", self.name, exc)
                conn.terminate()  # it may be half-open: a polite close would wait for an answer
            finally:
                self.connected = False
                await _close(conn)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        """Until the connection closes (returns) or stops answering (raises)."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(self.channel, lambda _conn, _pid, _channel, payload: self.on_notify(payload))
        self.connected = True
        self.on_connect()
        while not lost.is_set():
            try:
                async with asyncio.timeout(self.ping_seconds):  # never wait_for: see the module's docstring
                    await lost.wait()
            except TimeoutError:
                await conn.fetchval(QUERIES["server_version_num"], timeout=self.ping_timeout)
        log.warning("%s: the LISTEN connection closed; reconnecting", self.name)


async def _close(conn: asyncpg.Connection) -> None:
    if conn.is_closed():
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await conn.close()
    except Exception:
        conn.terminate()
