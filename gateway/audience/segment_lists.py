"""``GET /v1/segments`` from memory: each serve process keeps its endpoints' segment lists, dropped by NOTIFY.

Why: Exchange polls the list while it pushes. Read from the database, each poll waits for the uploads twice:
for its query's turn on a PostgreSQL busy with their COPYs, and for the event-loop turns its round trip
takes while the loop parses their bodies (issue 15: a p99 of 86 ms during a 1M REPLACE). So:

- An endpoint's list is read once and kept for at most ``LIST_TTL`` seconds (at most ``MAX_ENDPOINTS``
  endpoints, the oldest dropped first).
- Every statement that creates a segment or changes its name, type or status (``segment_insert``,
  ``meta_segment_update``, ``meta_segment_insert``, ``definition_audience_insert`` in sql/queries.sql)
  NOTIFYs ``audience_gateway_segments`` with the endpoint's id in the same statement: at its commit, every
  process drops that endpoint's list (gateway.db.listen keeps the LISTEN connection up). A listener only
  hears a transaction once it is committed and visible, so the next read sees the change.
- The process that made the change drops its list itself right after the commit (``forget``, called by the
  handler): its own notification arrives a moment later, and a client that got the answer of its change
  must see it in its next list (read-your-writes).
- While the LISTEN connection is down, lists are read from the database and not kept; a (re)connection
  empties the cache (notifications may have been missed meanwhile). The TTL bounds how long a half-open
  connection, not yet noticed by the listener's ping, can leave a list stale.
- A read that raced with a drop is not kept (the ``_drops`` counter), as in gateway.auth.cache.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg

from gateway.audience.segments import list_segments
from gateway.db.listen import Listener

log = logging.getLogger(__name__)

CHANNEL = "audience_gateway_segments"  # the payload is the endpoint's id (sql/queries.sql)
LISTENER_NAME = "audience-gateway segment lists"
LIST_TTL = 5.0
MAX_ENDPOINTS = 10_000


class SegmentLists:
    def __init__(self, pool: asyncpg.Pool, *, ttl: float = LIST_TTL, max_endpoints: int = MAX_ENDPOINTS) -> None:
        self._pool = pool
        self.ttl = ttl  # seconds a list is kept (read when it is next asked for)
        self._max_endpoints = max_endpoints
        self._lists: dict[int, tuple[float, list[dict[str, Any]]]] = {}
        self._drops = 0  # bumped by every drop: a read that raced with one is not kept
        self.listener: Listener | None = None  # set by listen()

    async def get(self, endpoint_id: int) -> list[dict[str, Any]]:
        """The endpoint's active segments (``id``, ``name``, ``type``) in id order; do not modify it."""
        now = time.monotonic()
        entry = self._lists.get(endpoint_id)
        if entry is not None and now - entry[0] < self.ttl and self.listening:
            return entry[1]
        drops = self._drops
        segments = await list_segments(self._pool, endpoint_id)
        self._lists.pop(endpoint_id, None)
        if self.listening and drops == self._drops:
            if len(self._lists) >= self._max_endpoints:
                del self._lists[next(iter(self._lists))]
            self._lists[endpoint_id] = (now, segments)
        return segments

    def forget(self, endpoint_id: int) -> None:
        self._drops += 1
        self._lists.pop(endpoint_id, None)

    def clear(self) -> None:
        self._drops += 1
        self._lists.clear()

    def _notified(self, payload: str) -> None:
        try:
            self.forget(int(payload))
        except ValueError:
            log.warning("%s: unexpected payload %r; dropping every list", LISTENER_NAME, payload)
            self.clear()

    async def listen(self, url: str) -> None:
        """Run until cancelled: LISTEN for changes (gateway.db.listen reconnects and checks liveness)."""
        self.listener = Listener(url, CHANNEL, LISTENER_NAME, self._notified,
                                  on_connect=self.clear)  # changes may have been missed meanwhile
        await self.listener.run()

    @property
    def listening(self) -> bool:
        return self.listener is not None and self.listener.connected
