"""The one rule for integers written in requests and commands (ids, counts, limits, cursors)."""

from __future__ import annotations

MAX_ID = 2**63 - 1  # PostgreSQL bigint


def parse_int(text: str | None, low: int = 1, high: int = MAX_ID) -> int | None:
    """``text`` as an integer in [low, high] when it is plain ASCII digits (no sign, space or ``_``), else None."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > len(str(high)):
        return None
    value = int(text)
    return value if low <= value <= high else None
