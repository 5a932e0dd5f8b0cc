"""Cron forms of schedules (gateway.segmentation.schedules): 5 fields, Quartz's 6 and 7 with seconds first,
UTC, at most one run a minute, and the next time strictly after a given one."""

import datetime as dt

import pytest

from gateway.errors import BadRequest
from gateway.segmentation.schedules import next_run, parse_cron

NOW = dt.datetime(2026, 11, 30, 7, 30, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("cron, expected", [
    ("*/5 * * * *", dt.datetime(2026, 11, 30, 7, 35, tzinfo=dt.UTC)),
    ("30 7 * * *", dt.datetime(2026, 12, 1, 7, 30, tzinfo=dt.UTC)),  # strictly after: not NOW itself
    ("0 0 1 * * ?", dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.UTC)),
    ("15 0 1 ? * MON-FRI", dt.datetime(2026, 12, 1, 1, 0, 15, tzinfo=dt.UTC)),
    ("0 0 1 * * ? 2027", dt.datetime(2027, 1, 1, 1, 0, tzinfo=dt.UTC)),
    ("0 0 12 ? * SUN *", dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)),
])
def test_next_run_of_each_form(cron, expected):
    assert parse_cron(cron, NOW) == cron
    assert next_run(cron, NOW) == expected
    assert next_run(cron, NOW.astimezone(dt.timezone(dt.timedelta(hours=5)))) == expected, "UTC whatever the zone"


def test_extra_spaces_are_normalised():
    assert parse_cron("  0   1 * *  * ", NOW) == "0 1 * * *"


@pytest.mark.parametrize("cron", ["", "* * * *", "* * * * * * * *", "*/10 * * * * ?", "* * * * * ?",
                                  "61 * * * *", "0 0 1 * * ? 1999", "0 0 0 31 2 ?", "a b c d e", None, 5])
def test_refused(cron):
    with pytest.raises(BadRequest) as caught:
        parse_cron(cron, NOW)
    assert caught.value.code == "invalid_schedule"


def test_a_cron_whose_times_are_past_has_no_next_run():
    assert next_run("0 0 1 * * ? 2026", dt.datetime(2027, 1, 1, tzinfo=dt.UTC)) is None
