"""The one paging rule of the /api lists (gateway.http.paging): limits, opaque cursors, an older cursor form."""

import base64
import datetime as dt

import pytest

from gateway.audience.changefeed import position
from gateway.errors import BadRequest
from gateway.http.paging import MAX_LIMIT, PageQuery, decode_cursor, encode_cursor, parse_page

UTC = dt.timezone.utc


def test_cursor_round_trip_is_opaque_url_safe_text():
    mark = dt.datetime(2026, 11, 23, 11, 0, 0, 5, tzinfo=UTC)
    cursor = encode_cursor({"after": 2**63 - 1, "watermark": mark.isoformat()})
    assert cursor.replace("-", "").replace("_", "").isalnum()
    assert parse_page({"cursor": cursor, "limit": "1000"}, position) == PageQuery(1000, (2**63 - 1, mark))
    assert encode_cursor(None) is None


def test_defaults():
    assert parse_page({}, position) == PageQuery(100, None)


@pytest.mark.parametrize("raw", [b"", b"[]", b"7", b'{"after": 1}', b'{"after": true, "watermark": "2026-01-01T00:00:00Z"}',
                                 b'{"after": 1, "watermark": "2026-01-01T00:00:00"}', b'{"after": 2e3, "watermark": 1}',
                                 b'{"after": 9223372036854775808, "watermark": "2026-01-01T00:00:00Z"}', b"\xff"])
def test_bad_cursors_are_400(raw):
    with pytest.raises(BadRequest) as caught:
        parse_page({"cursor": base64.urlsafe_b64encode(raw).decode()}, position)
    assert caught.value.code == "invalid_cursor"


def test_not_base64_is_400():
    with pytest.raises(BadRequest) as caught:
        decode_cursor("not a cursor!")
    assert caught.value.code == "invalid_cursor"


def test_an_older_cursor_form_is_read_first_when_the_route_gives_one():
    legacy = {"12": 12}.get
    assert parse_page({"cursor": "12"}, position, legacy=legacy) == PageQuery(100, 12)
    with pytest.raises(BadRequest):
        parse_page({"cursor": "13"}, position, legacy=legacy)


@pytest.mark.parametrize("limit", ["0", str(MAX_LIMIT + 1), "10000", "-1", "1.5", "", "١٠"])
def test_limits_out_of_range_are_400(limit):
    with pytest.raises(BadRequest) as caught:
        parse_page({"limit": limit}, position)
    assert caught.value.code == "invalid_limit"
