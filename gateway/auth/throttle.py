"""Throttling of failed authentications, per client address, in this process's memory.

A sliding window: an address with ``limit`` failures (401s) within the last ``window`` seconds is blocked
until the oldest of them leaves the window; while blocked, its ``/v1`` calls get 429 with ``Retry-After``
and are not looked up at all (a key-guessing client costs no database work), and they are not counted as
new failures. Successful calls are never counted. The state is per process: N processes allow up to N times
the limit, and a restart forgets it.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_ADDRESSES = 10_000  # memory bound: beyond it, addresses with no recent failure (then the oldest) go


class FailureThrottle:
    def __init__(self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit  # 0: never block
        self.window = window
        self._clock = clock
        self._failures: dict[str, collections.deque[float]] = {}

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it is not blocked."""
        failures = self._failures.get(address)
        if self.limit == 0 or failures is None or len(failures) < self.limit:
            return None
        wait = failures[0] + self.window - self._clock()
        return math.ceil(wait) if wait > 0 else None

    def record_failure(self, address: str) -> None:
        if self.limit == 0:
            return
        now = self._clock()
        failures = self._failures.get(address)
        if failures is None:
            if len(self._failures) >= MAX_ADDRESSES:
                self._make_room(now)
            failures = self._failures[address] = collections.deque(maxlen=self.limit)
        failures.append(now)
        if len(failures) == self.limit and failures[0] > now - self.window:
            log.warning("%s failed to authenticate %d times within %s s: refusing its calls for a while",
                        address, self.limit, self.window)

    def _make_room(self, now: float) -> None:
        for address in [a for a, times in self._failures.items() if times[-1] <= now - self.window]:
            del self._failures[address]
        while len(self._failures) >= MAX_ADDRESSES:
            del self._failures[next(iter(self._failures))]
