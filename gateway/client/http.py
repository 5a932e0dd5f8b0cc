"""What the push and pull clients share: the session, retries with backoff and jitter, and failures.

A call that may be retried is an ``attempt`` coroutine function: it raises ``Retryable`` (429, 5xx but
501) or a connection/payload error to be tried again, ``ServerRefused`` (another 4xx, 501: fail fast) to
stop, or returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import orjson

T = TypeVar("T")
MAX_ERROR_BYTES = 65536  # of a failure body kept for the message
FINAL_5XX = frozenset({501, 505})  # not implemented / HTTP version: asking again cannot help
RETRIED_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


class ClientFailure(Exception):
    """The server or the network failed for good (exit 3); the message is for humans."""


class ServerRefused(ClientFailure):
    """A 4xx other than 429 (or a 501): retrying the same request cannot help."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Retryable(Exception):
    """A 429 or 5xx answer: try again after ``retry_after`` seconds (the server's) or a backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; between them a random delay in [0, min(cap, base·2^n)] ("full jitter",
    so that parallel batches that failed together do not come back together), or the server's
    ``Retry-After`` when it sent one (at most ``cap``)."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap)
        return random.uniform(0, min(self.cap, self.base * 2 ** (failures - 1)))


def new_session(key: str, timeout: float) -> aiohttp.ClientSession:
    """A session sending the key; ``timeout`` bounds connecting and each wait for bytes (not a whole call)."""
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"},
                                 timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout))


async def retrying(what: str, attempt: Callable[[], Awaitable[T]], policy: RetryPolicy,
                   note: Callable[[str], None]) -> T:
    """``await attempt()`` until it succeeds; ``ClientFailure`` once ``policy.attempts`` have failed."""
    for number in range(1, policy.attempts + 1):
        try:
            return await attempt()
        except Retryable as exc:
            problem, retry_after = str(exc), exc.retry_after
        except RETRIED_ERRORS as exc:
            problem, retry_after = describe(exc), None
        if number == policy.attempts:
            raise ClientFailure(f"{what}: {problem} (gave up after {number} attempts)")
        delay = policy.delay(number, retry_after)
        note(f"{what}: {problem}; retrying in {delay:.1f} s (attempt {number + 1} of {policy.attempts})")
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def failure(response: aiohttp.ClientResponse, what: str) -> Exception:
    """The exception for an answer that is not the expected one (the caller raises it)."""
    body = await response.content.read(MAX_ERROR_BYTES)
    code, message = "", body.decode("utf-8", "replace").strip()[:300]
    try:
        error = orjson.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    text = f"HTTP {response.status}{' ' + code if code else ''}: {message or response.reason}"
    if response.status == 429 or (response.status >= 500 and response.status not in FINAL_5XX):
        return Retryable(text, _retry_after(response.headers.get("Retry-After")))
    return ServerRefused(f"{what}: {text}", response.status, code)


async def json_result(response: aiohttp.ClientResponse, what: str) -> Any:
    """The ``result`` of a 200 success envelope; else raise what ``failure`` says."""
    if response.status != 200:
        raise await failure(response, what)
    return orjson.loads(await response.read())["result"]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After in seconds (the HTTP-date form is ignored: backoff applies)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
