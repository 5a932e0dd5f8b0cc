"""Seeded audience data: Email,FirstName,LastName,Sex rows, as a file or as batches."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

HEADER = "Email,FirstName,LastName,Sex\n"
FIRST = ["Irene", "Jimmy", "Pamela", "Jerry", "Howard", "Tina", "James", "Joan", "John", "Ana", "Zoë", "Li"]
LAST = ["Ferguson", "Cox", "Williams", "Campbell", "Bennett", "Jones", "Smith", "O'Neil", "García", "Ng"]


def rows(count: int, *, seed: int = 1, start: int = 0) -> Iterator[str]:
    """``count`` CSV lines with unique emails (numbered from ``start``) in a seeded random order."""
    rng = random.Random(seed)
    numbers = list(range(start, start + count))
    rng.shuffle(numbers)
    for n in numbers:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        yield f"{first.lower()}.{n}@example{n % 97}.com,{first},{last},{'FM'[n % 2]}\n"


def write_csv(path: Path, count: int, *, seed: int = 1, start: int = 0) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        out.writelines(rows(count, seed=seed, start=start))
    return path


def batches(count: int, batch_rows: int, *, seed: int = 1, start: int = 0) -> list[bytes]:
    """The rows split Exchange-style: each batch a CSV body with its own header."""
    lines = list(rows(count, seed=seed, start=start))
    return [(HEADER + "".join(lines[i:i + batch_rows])).encode() for i in range(0, len(lines), batch_rows)]
