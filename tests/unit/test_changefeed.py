"""Times of the /api lists' change feed (gateway.audience.changefeed); paging is in test_paging."""

import datetime as dt

import pytest

from gateway.audience.changefeed import iso, parse_time
from gateway.errors import BadRequest

UTC = dt.timezone.utc


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
