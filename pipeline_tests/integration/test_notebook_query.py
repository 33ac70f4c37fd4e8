"""The notebook's query, as shipped and fixed, on crafted sessions: its defects are measurable."""

import datetime as dt

import pandas as pd

from pipeline.detect import notebook_query
from pipeline_tests.integration.test_lookback_window import START, timer, write_sessions


def test_grouping_by_source_hides_a_busy_hosts_beacon_and_the_fix_finds_it(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    day = START
    # One host: an exact 60 s beacon, plus 10 min polls to 20 other destinations, so that
    # per-source intervals mostly measure gaps to other destinations.
    rows = timer(day, 60, "10.0.0.5", "203.0.113.5", 443, seed=1)
    # Jitter-free (the notebook's exact-second mode misses even ±5 % jitter: 66 % in ±2 s).
    for i, row in enumerate(rows):
        row["TimeGenerated"] = pd.Timestamp(day) + pd.Timedelta(seconds=30 + 60 * i)
    for i in range(20):
        rows += timer(day, 600, "10.0.0.5", f"198.51.100.{i + 1}", 443, seed=10 + i)
    for row in rows:
        row.update(DeviceVendor="Fortinet", SourcePort=50000)
    write_sessions(spark, lake_url, {day: rows})

    shipped = notebook_query.run(spark, lake_url=lake_url, days=[day], fixed=False).toPandas()
    fixed = notebook_query.run(spark, lake_url=lake_url, days=[day], fixed=True).toPandas()
    assert "203.0.113.5" not in set(shipped.DestinationIP)
    assert set(fixed.DestinationIP) == {"203.0.113.5"}
    assert fixed.Percentbeacon.iloc[0] > 75


def test_a_null_byte_column_drops_the_rows_in_both_variants(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    day = START + dt.timedelta(days=1)
    rows = timer(day, 60, "10.0.0.6", "203.0.113.6", 443, seed=2)
    for row in rows:
        row.update(DeviceVendor="Fortinet", SourcePort=50000, SentBytes=None)
    write_sessions(spark, lake_url, {day: rows})
    for fixed in (False, True):
        found = notebook_query.run(spark, lake_url=lake_url, days=[day], fixed=fixed)
        assert found.count() == 0
