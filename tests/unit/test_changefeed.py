"""Cursors, limits and times of the /api lists (gateway.audience.changefeed)."""

import base64
import datetime as dt

import pytest

from gateway.audience.changefeed import PageRequest, decode_cursor, encode_cursor, iso, parse_page, parse_time
from gateway.errors import BadRequest

UTC = dt.timezone.utc


def test_cursor_round_trip_is_opaque_url_safe_text():
    mark = dt.datetime(2026, 11, 23, 11, 0, 0, 5, tzinfo=UTC)
    cursor = encode_cursor(2**63 - 1, mark)
    assert cursor.replace("-", "").replace("_", "").isalnum()
    assert decode_cursor(cursor) == (2**63 - 1, mark)
    assert parse_page({"cursor": cursor, "limit": "1000"}) == PageRequest(limit=1000, after=2**63 - 1, watermark=mark)


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"after": 1}', b'{"after": true, "watermark": "2026-01-01T00:00:00Z"}',
                                 b'{"after": 1, "watermark": "2026-01-01T00:00:00"}', b'{"after": 2e3, "watermark": 1}',
                                 b'{"after": 9223372036854775808, "watermark": "2026-01-01T00:00:00Z"}', b"\xff"])
def test_bad_cursors_are_400(raw):
    with pytest.raises(BadRequest) as caught:
        decode_cursor(base64.urlsafe_b64encode(raw).decode())
    assert caught.value.code == "invalid_cursor"


@pytest.mark.parametrize("text, expected", [
    ("2026-01-31T12:00:00Z", dt.datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("2026-01-31T13:00:00+01:00", dt.datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("2026-01-31T12:00:00 00:00", dt.datetime(2026, 1, 31, 12, tzinfo=UTC)),  # "+" decoded as a space
    ("2026-01-31 12:00:00.000001Z", dt.datetime(2026, 1, 31, 12, 0, 0, 1, tzinfo=UTC)),
])
def test_times_with_a_zone(text, expected):
    assert parse_time(text, "updatedSince") == expected


@pytest.mark.parametrize("text", ["2026-01-31T12:00:00", "2026-01-31", "now", "", "2026-13-01T00:00:00Z"])
def test_times_without_a_zone_or_malformed_are_400(text):
    with pytest.raises(BadRequest):
        parse_time(text, "updatedSince")


def test_iso_always_has_microseconds():
    assert iso(dt.datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000+00:00"
    assert iso(None) is None


@pytest.mark.parametrize("limit", ["0", "1001", "10000", "-1", "1.5", "", "١٠"])
def test_limits_out_of_range_are_400(limit):
    with pytest.raises(BadRequest):
        parse_page({"limit": limit})
