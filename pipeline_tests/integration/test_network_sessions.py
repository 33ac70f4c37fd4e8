"""network_sessions on crafted export blobs with real local Spark: every line is accounted for."""

import datetime as dt
import os

import pandas as pd
import pytest

from pipeline.ingest import network_sessions
from pipeline.ingest.export_layout import blobs_for_days
from pipeline.lake import Lake
from pipeline_tests.conftest import record, write_blob

D = dt.date(2026, 3, 10)
NEXT = D + dt.timedelta(days=1)


def run_days(spark, export, lake_url, days, vendors=()):
    per_day, late = blobs_for_days(str(export), days)
    urls = [b.url for d in days for b in per_day[d]] + [b.url for b in late]
    return network_sessions.run(
        spark, lake_url=lake_url, days=days, blob_urls=urls, device_vendors=vendors
    )


def read(lake_url, table, day):
    path = Lake(lake_url).day_url(table, day)
    return pd.read_parquet(path) if os.path.exists(path) else pd.DataFrame()


@pytest.fixture()
def crafted(tmp_path):
    export = tmp_path / "export"
    good = record("2026-03-10T08:00:00.1234567Z")
    write_blob(
        export,
        D,
        8,
        0,
        [
            good,
            good,  # exact export-retry duplicate
            {**{k: good[k] for k in reversed(list(good))}},  # same record, other key order
            record("2026-03-10T08:01:00Z", src="fe80::1", dst="2001:db8::42"),  # IPv6 kept
            record("3/10/2026, 8:02:00.500 AM"),  # portal timestamp format
            record("2026-03-10T08:03:00Z", DestinationPort="443"),  # number as string
            record("2026-03-10T08:04:00Z", DeviceVendor="Check Point"),
            "",  # blank line: not a record
            '{"TimeGenerated": "2026-03-10T08:05:00Z", "SourceIP": "10.0.0.5", "Dest',
            "<html>502</html>",
            json_line(record("2026-03-10T08:06:00Z", SentBytes="abc")),
            json_line(record("2026-03-10T08:07:00Z", DestinationPort=70000)),
            json_line(record("2026-03-10T08:08:00Z", SourceIP="")),
            json_line(record("2026-03-10T08:09:00Z", DestinationIP="999.1.1.1")),
            json_line(record("not a time")),
            json_line({k: v for k, v in record("x").items() if k != "TimeGenerated"}),
            json_line(record("2026-03-08T08:00:00Z")),  # two days early: no run would read it
        ],
    )
    # Continuation blob in the hourly layout folder of the same day.
    write_blob(export, D, 9, 0, [record("2026-03-10T09:00:00Z")], name="PT1H.json")
    write_blob(export, D, 9, 0, [record("2026-03-10T09:30:00Z")], name="PT1H_1.json")
    write_blob(export, D, 9, 0, [record("2026-03-10T09:31:00Z")], name="notes.json")
    # Late arrivals: D's record in the next day's 02:00 folder (read), and in its 13:00 folder
    # (beyond the 12-hour late window: D+1's run quarantines it, D's run never sees it).
    write_blob(export, NEXT, 2, 0, [record("2026-03-10T23:59:00Z"), record("2026-03-11T02:00:00Z")])
    write_blob(export, NEXT, 13, 0, [record("2026-03-10T23:58:00Z")])
    return export


def json_line(value: dict) -> str:
    import json

    return json.dumps(value)


def test_types_deduplicates_and_quarantines_every_bad_line(spark, crafted, tmp_path):
    lake_url = str(tmp_path / "lake")
    report = run_days(spark, crafted, lake_url, [D])[D.isoformat()]
    sessions = read(lake_url, "network_sessions", D)
    quarantine = read(lake_url, "quarantine", D)

    # 3 copies of one record → 1; IPv6, portal time, string port, Check Point, 2 hourly-layout
    # records (the PT1H_1 continuation included, notes.json ignored), 1 late record.
    assert report["rows"] == len(sessions) == 8
    assert report["duplicates_dropped"] == 2
    assert report["late_records"] == 1
    assert sorted(quarantine["reason"]) == sorted(
        [
            "malformed_json",
            "malformed_json",
            "bad_bytes",
            "bad_port",
            "missing_ip",
            "bad_ip",
            "bad_timestamp",
            "missing_timestamp",
            "timestamp_outside_folder_day",
        ]
    )
    assert report["quarantined"] == 9
    assert report["quarantine_reasons"]["malformed_json"] == 2
    assert quarantine["source_file"].str.contains("/d=10/h=08/m=00/PT05M.json").all()
    assert "<html>502</html>" in set(quarantine["record"])

    assert "2001:db8::42" in set(sessions["DestinationIP"])
    portal = sessions[sessions["TimeGenerated"] == pd.Timestamp("2026-03-10 08:02:00.500")]
    assert len(portal) == 1
    first = sessions.sort_values("TimeGenerated").iloc[0]
    assert first["TimeGenerated"] == pd.Timestamp("2026-03-10 08:00:00.123456")
    assert first["DestinationPort"] == 443 and first["SentBytes"] == 100
    assert set(sessions["Protocol"]) == {"TCP"}
    assert "2026-03-11 02:00:00" not in set(sessions["TimeGenerated"].astype(str))


def test_vendor_filter_counts_what_it_drops(spark, crafted, tmp_path):
    lake_url = str(tmp_path / "lake")
    report = run_days(spark, crafted, lake_url, [D], vendors=("Fortinet",))[D.isoformat()]
    sessions = read(lake_url, "network_sessions", D)
    assert set(sessions["DeviceVendor"]) == {"Fortinet"}
    assert report["vendor_filtered"] == 1
    assert report["rows"] == 7


def test_rerun_replaces_the_day_and_manifest(spark, crafted, tmp_path):
    lake_url = str(tmp_path / "lake")
    run_days(spark, crafted, lake_url, [D])
    before = read(lake_url, "network_sessions", D).sort_values("TimeGenerated")
    run_days(spark, crafted, lake_url, [D])
    after = read(lake_url, "network_sessions", D).sort_values("TimeGenerated")
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))
    assert Lake(lake_url).read_manifest("network_sessions", D)["rows"] == len(after)


def test_a_range_in_one_run_and_the_next_days_late_window(spark, crafted, tmp_path):
    lake_url = str(tmp_path / "lake")
    report = run_days(spark, crafted, lake_url, [D, NEXT])
    assert report[D.isoformat()]["rows"] == 8
    # D+1 holds its own 02:00 record; the D record in its 13:00 folder is too late for D.
    assert report[NEXT.isoformat()]["rows"] == 1
    assert report[NEXT.isoformat()]["quarantine_reasons"] == {"timestamp_outside_folder_day": 1}


def test_a_day_emptied_on_rerun_loses_its_stale_rows(spark, crafted, tmp_path):
    lake_url = str(tmp_path / "lake")
    run_days(spark, crafted, lake_url, [D])
    for blob in crafted.rglob("*.json"):
        if "/d=10/" in str(blob):
            blob.write_text("")
    report = run_days(spark, crafted, lake_url, [D])[D.isoformat()]
    assert report["rows"] == 1  # only the late record from the next day's folder
    assert len(read(lake_url, "network_sessions", D)) == 1
    assert len(read(lake_url, "quarantine", D)) == 0
