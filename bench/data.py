"""Seeded audience data: Email,FirstName,LastName,Sex rows, as a file, as batches or as a stream."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

HEADER = "Email,FirstName,LastName,Sex\n"
FIRST = ["Irene", "Jimmy", "Pamela", "Jerry", "Howard", "Tina", "James", "Joan", "John", "Ana", "Zoë", "Li"]
LAST = ["Ferguson", "Cox", "Williams", "Campbell", "Bennett", "Jones", "Smith", "O'Neil", "García", "Ng"]


def _scrambled(count: int, seed: int) -> Iterator[int]:
    """0..count-1 in a seeded, unsorted order, without holding a list (10M rows stay cheap):
    a multiplicative permutation i → (a·i + b) mod count with a coprime to count."""
    rng = random.Random(seed)
    a = rng.randrange(count // 3 + 1, count + 2) | 1
    while math.gcd(a, count) != 1:
        a += 2
    b = rng.randrange(count) if count else 0
    return ((a * i + b) % count for i in range(count))


def rows(count: int, *, seed: int = 1, start: int = 0) -> Iterator[str]:
    """``count`` CSV lines with unique emails (numbered from ``start``) in a seeded order."""
    rng = random.Random(seed)
    for i in _scrambled(count, seed):
        n = start + i
        first, last = rng.choice(FIRST), rng.choice(LAST)
        yield f"{first.lower()}.{n}@example{n % 97}.com,{first},{last},{'FM'[n % 2]}\n"


def write_csv(path: Path, lines: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        out.writelines(lines)
    return path


def batches(lines: list[str], batch_rows: int) -> list[tuple[int, bytes]]:
    """The lines split Exchange-style: (batch number from 1, a CSV body with its own header)."""
    return [(number, (HEADER + "".join(lines[i:i + batch_rows])).encode())
            for number, i in enumerate(range(0, len(lines), batch_rows), start=1)]


async def stream(count: int, *, seed: int = 1, start: int = 0, chunk_rows: int = 5000) -> AsyncIterator[bytes]:
    """One CSV body generated on the fly, in chunks: a request of any size without holding it."""
    yield HEADER.encode()
    lines: list[str] = []
    for line in rows(count, seed=seed, start=start):
        lines.append(line)
        if len(lines) == chunk_rows:
            yield "".join(lines).encode()
            lines = []
    if lines:
        yield "".join(lines).encode()


PROFILE_HEADER = "Email,Country,LastPurchase\n"
COUNTRIES = ["DE", "FR", "GB", "CA"]


def profile_rows(count: int, today: dt.date, *, seed: int = 11) -> Iterator[str]:
    """``count`` lines for the segment-job scenario, in a seeded order: a fifth have Country US, and half
    of those a LastPurchase in the last 29 days (the others 31 to 61 days ago): about 10 % qualify for
    ``Country = "US" and LastPurchase occurs <= 30 days before now``."""
    for n in _scrambled(count, seed):
        country = "US" if n % 5 == 0 else COUNTRIES[n % 4]
        days = (n // 5) % 60 + (2 if (n // 5) % 60 >= 29 else 0)  # 0..28 or 31..61: never near the edge
        yield f"person.{n}@example{n % 97}.com,{country},{(today - dt.timedelta(days=days)).isoformat()}\n"


async def profile_stream(count: int, today: dt.date, *, chunk_rows: int = 5000) -> AsyncIterator[bytes]:
    """``profile_rows`` as one CSV body generated on the fly."""
    yield PROFILE_HEADER.encode()
    lines: list[str] = []
    for line in profile_rows(count, today):
        lines.append(line)
        if len(lines) == chunk_rows:
            yield "".join(lines).encode()
            lines = []
    if lines:
        yield "".join(lines).encode()
