"""The functions behind the blocking checks: export schema drift and window coverage."""

import datetime as dt
from pathlib import Path

from pipeline.detect.checks import low_coverage_days
from pipeline.ingest.checks import export_schema_drift
from pipeline_tests.conftest import record, write_blob

DAY = dt.date(2026, 11, 20)


def blobs(root: Path, lines_per_blob: list[list]) -> list[str]:
    return [str(write_blob(root, DAY, hour, 0, lines)) for hour, lines in enumerate(lines_per_blob)]


def test_records_as_the_export_writes_them_do_not_drift(tmp_path):
    urls = blobs(tmp_path, [[record(f"{DAY}T0{h}:00:00Z")] for h in range(3)])
    drift = export_schema_drift({DAY.isoformat(): urls})
    assert drift["drifted_days"] == {}
    assert drift["new_columns"] == []
    assert drift["records_sampled"] == 3


def test_a_renamed_column_is_drift(tmp_path):
    renamed = record(f"{DAY}T01:00:00Z")
    renamed["DstIP"] = renamed.pop("DestinationIP")
    urls = blobs(tmp_path, [[record(f"{DAY}T00:00:00Z")], [renamed]])
    drift = export_schema_drift({DAY.isoformat(): urls})
    assert drift["drifted_days"] == {DAY.isoformat(): ["DestinationIP missing"]}
    assert drift["new_columns"] == ["DstIP"]


def test_a_retyped_column_is_drift_and_malformed_lines_are_not(tmp_path):
    retyped = record(f"{DAY}T01:00:00Z", DestinationPort=[443])
    urls = blobs(tmp_path, [["{not json", retyped]])
    drift = export_schema_drift({DAY.isoformat(): urls})
    assert drift["drifted_days"] == {DAY.isoformat(): ["DestinationPort is list"]}
    assert drift["records_sampled"] == 1


def test_new_columns_alone_are_listed_not_failed(tmp_path):
    urls = blobs(tmp_path, [[record(f"{DAY}T00:00:00Z", ThreatSeverity=3)]])
    drift = export_schema_drift({DAY.isoformat(): urls})
    assert drift["drifted_days"] == {}
    assert drift["new_columns"] == ["ThreatSeverity"]


def test_only_a_few_blobs_per_day_are_read(tmp_path):
    lines = [[record(f"{DAY}T{h:02d}:00:00Z")] for h in range(20)]
    drift = export_schema_drift({DAY.isoformat(): blobs(tmp_path, lines)})
    assert drift["records_sampled"] == 6


def test_coverage_counts_the_window_from_the_start_date_on():
    report = {
        # A clipped window (new deployment) that is complete: not low.
        "2026-11-03": {"window_days": 3, "window_days_present": 3},
        # A full 21-day window with holes.
        "2026-11-30": {"window_days": 21, "window_days_present": 10},
        "2026-12-01": {"window_days": 21, "window_days_present": 11},
    }
    assert low_coverage_days(report, 0.5) == {"2026-11-30": 0.476}
    assert low_coverage_days(report, 0.0) == {}
