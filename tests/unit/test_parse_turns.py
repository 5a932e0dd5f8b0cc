"""Parsing bodies shares the event loop: each step of a body (``_PARSE_STEP`` bytes) is a turn of the loop of its
own, and one turn holds the steps of at most ``PARSE_SLOTS`` bodies, however many are parsed at once and
however large the chunks they arrive in (gateway.ingest.upload.parse_turn)."""

from __future__ import annotations

import asyncio
from collections import Counter

from gateway.ingest.upload import _PARSE_STEP, PARSE_SLOTS, ColumnRules, Upload, plan_columns

ROWS = 40_000
BODY = b"email,name\n" + b"".join(b"u%d@x.com,name %d\n" % (i, i) for i in range(ROWS))
BODIES = 3


class OneChunk:
    """A request body that arrived whole: one read gives all of it."""

    def __init__(self, body: bytes) -> None:
        self.pieces = [body]

    async def readany(self) -> bytes:
        return self.pieces.pop() if self.pieces else b""


async def test_each_turn_of_the_loop_parses_one_step_of_one_body():
    assert len(BODY) > 10 * _PARSE_STEP
    turn = 0

    async def count_turns() -> None:
        nonlocal turn
        while True:
            turn += 1
            await asyncio.sleep(0)

    pieces: list[int] = []  # the turn each piece of COPY text was made in

    async def parse(body: bytes) -> int:
        upload = Upload(OneChunk(body), gzipped=False, max_body_bytes=10**9, max_field_bytes=65536)
        plan = plan_columns(await upload.read_header(), None, [], ColumnRules(ids=None, max_attributes=10))
        lines = 0
        async for piece in upload.records(plan, staged_batch=1):
            pieces.append(turn)
            lines += piece.count(b"\n")
        return lines

    ticker = asyncio.create_task(count_turns())
    try:
        assert await asyncio.gather(*(parse(BODY) for _ in range(BODIES))) == [ROWS] * BODIES
    finally:
        ticker.cancel()
    assert len(pieces) >= BODIES * (len(BODY) // _PARSE_STEP)
    assert max(Counter(pieces).values()) <= PARSE_SLOTS
