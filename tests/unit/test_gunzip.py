"""A gzip body may be several members one after the other: every member is read, nothing after them is dropped."""

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequest
from gateway.ingest.upload import ColumnRules, Upload, plan_columns


class Chunks:
    """A request body arriving in the given pieces."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = [piece for piece in pieces if piece]  # an empty read means the end of the body

    async def readany(self) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


async def rows_of(*pieces: bytes, gzipped: bool = True) -> list[tuple]:
    upload = Upload(Chunks(*pieces), gzipped=gzipped, max_body_bytes=10**9, max_field_bytes=65536)
    plan = plan_columns(await upload.read_header(), None, [], ColumnRules(ids=None, max_attributes=1000))
    return [record async for record in upload.records(plan)]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, repeats allowed)."""
    edges = [0, *sorted({point % (len(data) + 1) for point in points}), len(data)]
    return [data[start:end] for start, end in zip(edges, edges[1:])]


BODY = b"email,name\n" + b"".join(b"u%d@x.com,name %d\n" % (i, i) for i in range(300))


@settings(max_examples=200, deadline=None)
@given(member_cuts=st.lists(st.integers(0, len(BODY)), max_size=6),
       chunk_cuts=st.lists(st.integers(0, 10**6), max_size=8),
       level=st.sampled_from([0, 1, 9]))
async def test_any_split_of_a_body_into_members_gives_the_same_rows(member_cuts, chunk_cuts, level):
    """Members cut anywhere (inside a row, a field, empty members), the compressed bytes arriving in
    pieces cut anywhere (inside a member's header or trailer): the same rows as the plain body."""
    compressed = b"".join(gzip.compress(part, compresslevel=level) for part in cut(BODY, member_cuts))
    assert await rows_of(*cut(compressed, chunk_cuts)) == await rows_of(BODY, gzipped=False)


async def test_every_member_is_read_not_only_the_first():
    first, second = BODY[:200], BODY[200:]
    rows = await rows_of(gzip.compress(first) + gzip.compress(second))
    assert len(rows) == 300
    assert rows[-1] == (301, "u299@x.com", "name 299")


async def test_many_members_in_one_chunk_even_empty_ones_between_them():
    members = [gzip.compress(b"")] * 3 + [gzip.compress(BODY[:100])] + [gzip.compress(b"")] * 3 + \
        [gzip.compress(BODY[100:])] + [gzip.compress(b"")]
    assert await rows_of(b"".join(members)) == await rows_of(BODY, gzipped=False)


@pytest.mark.parametrize("trailer", [b"x", b"\x00", b"\x00" * 8, b"\x1f", b"\x1f\x8b", b"garbage after it\n",
                                     gzip.compress(b"u1@x.com,z\n")[:-3]],
                         ids=["byte", "nul", "zeros", "magic-1", "magic-2", "text", "truncated-member"])
@pytest.mark.parametrize("apart", [False, True], ids=["same-chunk", "own-chunk"])
async def test_bytes_after_the_last_member_that_are_not_gzip_are_invalid_gzip(trailer, apart):
    body = gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])
    pieces = (body, trailer) if apart else (body + trailer,)
    with pytest.raises(BadRequest) as caught:
        await rows_of(*pieces)
    assert caught.value.code == "invalid_gzip"


async def test_a_member_that_inflates_past_the_step_is_read_whole():
    """A member bigger than one inflate step, followed by another: the bounded steps go on into the next."""
    big = b"email,name\n" + b"".join(b"b%d@x.com,%s\n" % (i, b"y" * 100) for i in range(20_000))
    assert len(big) > 2 * 1024 * 1024
    body = gzip.compress(big) + gzip.compress(b"last@x.com,z\n")
    rows = await rows_of(body)
    assert len(rows) == 20_001 and rows[-1][1] == "last@x.com"

