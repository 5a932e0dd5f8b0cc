"""API keys as each serve process sees them: a short in-memory cache, revocations pushed by NOTIFY.

Why: at high request rates a database round trip per request just to read the caller's key would cost
more than many handlers themselves. So:

- A key's row is kept for ``CACHE_TTL`` seconds, keyed by its ``lookup_id`` (at most ``CACHE_MAX_KEYS``
  rows, the oldest dropped first). The secret's hash, revocation and expiry are still checked at every call
  against the cached row, so an expiry takes effect to the second. Unknown keys are not cached.
- ``keys revoke`` NOTIFYs ``audience_gateway_keys`` in its transaction; every process LISTENs on a dedicated
  connection and drops the key at once. If that connection is lost or stops answering, the process
  reconnects (gateway.db.listen) and empties its cache, since it may have missed revocations; meanwhile the
  TTL bounds how long a revoked key still works.
- ``last_used_at`` is kept in memory and written for all keys used since in one statement at most once a
  minute (and at shutdown), instead of one write per request.
"""

from __future__ import annotations

import datetime as dt
import time

import asyncpg

from gateway.auth import keys as auth
from gateway.auth.keys import Principal
from gateway.errors import Unauthorized
from gateway.db.listen import Listener
from gateway.db.queries import QUERIES

CACHE_TTL = 5.0
CACHE_MAX_KEYS = 10_000
LAST_USED_FLUSH_SECONDS = 60.0
LISTENER_NAME = "audience-gateway key revocations"
RECENTLY_VALID_SECONDS = 3600


class KeyCache:
    def __init__(self, pool: asyncpg.Pool, *, ttl: float = CACHE_TTL, max_keys: int = CACHE_MAX_KEYS) -> None:
        self._pool = pool
        self._ttl = ttl
        self._max_keys = max_keys
        self._entries: dict[str, tuple[float, auth.KeyRecord]] = {}
        self._forgets = 0  # bumped by every drop: a lookup that raced with a revocation is not cached
        self._last_used: dict[int, dt.datetime] = {}
        self._recently_valid: dict[str, float] = {}  # lookup_id → last success (monotonic)
        self._listener: Listener | None = None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request, or Unauthorized (401)."""
        lookup_id, secret_hash = auth.parse_authorization(authorization)
        principal = auth.check_key(await self._record(lookup_id), secret_hash)
        self._last_used[principal.key_id] = dt.datetime.now(dt.timezone.utc)
        if len(self._recently_valid) >= self._max_keys and lookup_id not in self._recently_valid:
            del self._recently_valid[next(iter(self._recently_valid))]
        self._recently_valid[lookup_id] = time.monotonic()
        return principal

    def recently_valid(self, authorization: str | None) -> bool:
        """Whether this key authenticated in this process within the last hour (no database access).

        Lets a known client through while its address is throttled (e.g. Exchange behind the same proxy
        as someone guessing keys); the full check still follows, so a revoked key is still refused.
        """
        try:
            lookup_id, _ = auth.parse_authorization(authorization)
        except Unauthorized:
            return False
        seen = self._recently_valid.get(lookup_id)
        return seen is not None and time.monotonic() - seen < RECENTLY_VALID_SECONDS

    async def _record(self, lookup_id: str) -> auth.KeyRecord | None:
        now = time.monotonic()
        entry = self._entries.get(lookup_id)
        if entry is not None and now - entry[0] < self._ttl:
            return entry[1]
        forgets = self._forgets
        record = await auth.fetch_key(self._pool, lookup_id)
        self._entries.pop(lookup_id, None)
        if record is not None and forgets == self._forgets:
            if len(self._entries) >= self._max_keys:
                del self._entries[next(iter(self._entries))]
            self._entries[lookup_id] = (now, record)
        return record

    def forget(self, lookup_id: str) -> None:
        self._forgets += 1
        self._entries.pop(lookup_id, None)

    def clear(self) -> None:
        self._forgets += 1
        self._entries.clear()

    # --- revocations --------------------------------------------------------------------------
    async def listen_for_revocations(self, url: str) -> None:
        """Run until cancelled: LISTEN for revocations (gateway.db.listen reconnects and checks liveness)."""
        self._listener = Listener(url, auth.REVOCATIONS_CHANNEL, LISTENER_NAME, self.forget,
                                  on_connect=self.clear)  # revocations may have been missed meanwhile
        await self._listener.run()

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.connected

    # --- last used ----------------------------------------------------------------------------
    async def flush_last_used(self) -> None:
        """Write the last-used times gathered since the previous flush (one statement for all keys)."""
        if not self._last_used:
            return
        used, self._last_used = self._last_used, {}
        try:
            await self._pool.execute(QUERIES["key_touch_last_used"], list(used), list(used.values()))
        except BaseException:
            for key_id, at in used.items():  # keep them for the next flush
                self._last_used[key_id] = max(at, self._last_used.get(key_id, at))
            raise

