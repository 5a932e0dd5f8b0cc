"""One rule for integers in requests and commands (gateway.ids): ASCII digits only, within bounds."""

import pytest

from gateway.ids import MAX_ID, parse_int


@pytest.mark.parametrize("text, expected", [("1", 1), ("42", 42), (str(MAX_ID), MAX_ID), ("007", 7)])
def test_digits_within_bounds_are_read(text, expected):
    assert parse_int(text) == expected


@pytest.mark.parametrize("text", [None, "", "0", "-1", "+1", " 1", "1_000", "1.0", "١", str(MAX_ID + 1),
                                  "0" * 20 + "1", "9" * 5000])
def test_anything_else_is_refused(text):
    assert parse_int(text) is None


def test_bounds_are_the_callers():
    assert parse_int("0", 0) == 0
    assert parse_int("1000", 1, 1000) == 1000
    assert parse_int("1001", 1, 1000) is None
