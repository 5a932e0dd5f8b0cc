"""What a command's status tag says."""

from __future__ import annotations


def rows_affected(status: str) -> int:
    """The row count of a command status as asyncpg returns it ("INSERT 0 n", "UPDATE n", "DELETE n",
    "COPY n", "SELECT n")."""
    return int(status.split()[-1])
