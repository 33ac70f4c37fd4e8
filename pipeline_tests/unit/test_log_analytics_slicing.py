"""Unit tests of the query-mode slicing plan and KQL literals (no server, no Spark)."""

import datetime as dt
import itertools

import pytest

from pipeline.azure.log_analytics import Slice, kql_datetime, kql_string, plan_slices
from pipeline.ingest.query_export import base_query

START = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
END = START + dt.timedelta(days=1)
BIN = dt.timedelta(minutes=5)


def bins(**counts_at_minute: int) -> dict[dt.datetime, int]:
    return {START + dt.timedelta(minutes=int(m[1:])): c for m, c in counts_at_minute.items()}


def assert_tiles(slices: list[Slice]) -> None:
    assert slices[0].start == START
    assert slices[-1].end == END
    for before, after in itertools.pairwise(slices):
        assert before.end == after.start


def test_a_small_day_is_one_slice():
    slices = plan_slices(bins(m0=10, m600=20), START, END, max_rows=100)
    assert slices == [Slice(START, END, 30)]


def test_an_empty_day_is_still_one_slice_to_ask_for():
    assert plan_slices({}, START, END, max_rows=100) == [Slice(START, END, 0)]


def test_slices_stay_under_the_limit_and_tile_the_day():
    counts = {START + i * BIN: 30 for i in range(288)}  # 8,640 rows
    slices = plan_slices(counts, START, END, max_rows=1000)
    assert_tiles(slices)
    assert all(s.expected_rows <= 1000 for s in slices)
    assert sum(s.expected_rows for s in slices) == 8640
    assert len(slices) == 9  # 33 bins of 30 rows = 990 per slice


def test_a_bin_above_the_limit_is_a_slice_of_its_own():
    slices = plan_slices(bins(m0=10, m5=5000, m10=10), START, END, max_rows=100)
    assert_tiles(slices)
    assert [s.expected_rows for s in slices] == [10, 5000, 10]
    assert slices[1].start == START + BIN
    assert slices[1].end == START + 2 * BIN


def test_halves_split_in_the_middle_and_count_server_failures():
    piece = Slice(START, START + dt.timedelta(seconds=3), 7)
    first, second = piece.halves(failed_on_server=True)
    assert first.start == START and second.end == piece.end
    assert first.end == second.start == START + dt.timedelta(seconds=1.5)
    assert first.server_failures == second.server_failures == 1
    assert piece.halves(failed_on_server=False)[0].server_failures == 0


def test_kql_literals():
    assert kql_datetime(START + dt.timedelta(microseconds=5)) == (
        "datetime(2026-11-20T00:00:00.000005Z)"
    )
    assert kql_string('Check "Point" \\ x') == '"Check \\"Point\\" \\\\ x"'


@pytest.mark.parametrize(
    ("vendors", "query"),
    [
        ((), "CommonSecurityLog"),
        (
            ("Check Point", "Fortinet"),
            'CommonSecurityLog | where DeviceVendor in ("Check Point", "Fortinet")',
        ),
    ],
)
def test_base_query_filters_vendors_at_the_source(vendors, query):
    assert base_query(vendors) == query
