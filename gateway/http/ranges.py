"""Byte ranges (RFC 9110 §14) of a representation whose exact length is known (or measured) first.

One range per request: ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n``. A Range header the server may
ignore (another unit, several ranges, bad syntax) is ignored: the whole representation is sent (200), as
RFC 9110 allows. ``If-Range`` is compared strongly with the ETag; a date or another tag also means "send
it whole". A first position at or past the end → 416 with ``Content-Range: bytes */length``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping

from gateway.errors import GatewayError

_SINGLE_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


class RangeNotSatisfiable(GatewayError):
    status = 416
    code = "range_not_satisfiable"

    def __init__(self, length: int) -> None:
        super().__init__(f"the requested range starts at or after the end of the data ({length} bytes)",
                         headers={"Content-Range": f"bytes */{length}"})


@dataclasses.dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


def _range_spec(headers: Mapping[str, str], etag: str) -> tuple[str, str] | None:
    """The first and last positions (digits or "") of the one range to honour, or None to send it whole."""
    value = headers.get("Range")
    if value is None:
        return None
    if_range = headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None
    match = _SINGLE_RANGE.fullmatch(value)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    return match.group(1), match.group(2)


def range_asked(headers: Mapping[str, str], etag: str) -> bool:
    """Whether the answer depends on the length: a range to honour (206 or 416) rather than the whole."""
    return _range_spec(headers, etag) is not None


def requested_range(headers: Mapping[str, str], etag: str, length: int) -> ByteRange | None:
    """The range to send, or None for the whole representation; raises ``RangeNotSatisfiable``."""
    spec = _range_spec(headers, etag)
    if spec is None:
        return None
    first, last = spec
    if first == "":  # the last n bytes
        suffix = int(last)
        if suffix == 0 or length == 0:
            raise RangeNotSatisfiable(length)
        return ByteRange(max(0, length - suffix), length - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= length:
        raise RangeNotSatisfiable(length)
    return ByteRange(start, min(int(last), length - 1) if last else length - 1)


class RangeSent(Exception):
    """Raised by ``RangeWriter`` once the range's last byte is written: stop producing the rest."""


class RangeWriter:
    """Passes on only the bytes of ``wanted`` from a stream of ``length`` bytes written in pieces from its
    first byte; raises ``RangeSent`` when the range ends before the stream does."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]], wanted: ByteRange, length: int) -> None:
        self._write = write
        self.wanted = wanted
        self.stops_early = wanted.end < length - 1
        self.position = 0  # of the next byte written

    async def write(self, data: bytes) -> None:
        low = max(self.wanted.start - self.position, 0)
        high = min(self.wanted.end + 1 - self.position, len(data))
        self.position += len(data)
        if low < high:
            await self._write(data[low:high] if (low, high) != (0, len(data)) else data)
        if self.stops_early and self.position > self.wanted.end:
            raise RangeSent()
