"""Which days `make demo` runs: the last N complete days, plus any hole since the last demo."""

import datetime as dt

import pytest

from pipeline.__main__ import DEMO_CATCH_UP_MAX_DAYS, DemoRangeError, demo_days

YESTERDAY = dt.date(2027, 1, 14)


def test_a_first_demo_runs_the_last_n_days():
    assert demo_days(YESTERDAY, 21, None) == (dt.date(2026, 12, 25), YESTERDAY)


@pytest.mark.parametrize("lake_last", [dt.date(2026, 12, 24), dt.date(2027, 1, 1), YESTERDAY])
def test_a_demo_whose_lake_joins_or_overlaps_its_days_runs_the_last_n_days(lake_last):
    assert demo_days(YESTERDAY, 21, lake_last) == (dt.date(2026, 12, 25), YESTERDAY)


def test_a_demo_run_again_weeks_later_fills_the_hole_since_the_last_one():
    # The first demo ended on 2026-12-05; forty days later the windows of the first new days
    # would reach into the days in between, so they run too.
    assert demo_days(YESTERDAY, 21, dt.date(2026, 12, 5)) == (dt.date(2026, 12, 6), YESTERDAY)


def test_a_hole_too_long_to_fill_asks_for_a_fresh_start():
    first = YESTERDAY - dt.timedelta(days=20)
    lake_last = first - dt.timedelta(days=DEMO_CATCH_UP_MAX_DAYS + 2)
    with pytest.raises(DemoRangeError, match="make clean"):
        demo_days(YESTERDAY, 21, lake_last)
    # One day less is still filled.
    assert demo_days(YESTERDAY, 21, lake_last + dt.timedelta(days=1))[0] == first - dt.timedelta(
        days=DEMO_CATCH_UP_MAX_DAYS
    )
