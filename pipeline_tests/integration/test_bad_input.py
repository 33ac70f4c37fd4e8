"""Bad input through network_sessions with real local Spark: every line has a counted outcome.

One crafted day holds every kind of hostile line the issue lists, each tagged with a case id in
`DeviceAction`, so the test can say where each one went: a session row, or quarantine with the
expected reason and its source blob. Nothing may be lost: the day's counts add up to the lines
written.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest import network_sessions
from pipeline.ingest.commonsecuritylog import COLUMNS as KNOWN_COLUMNS
from pipeline.ingest.export_layout import blobs_for_days
from pipeline.lake import Lake
from pipeline_tests.conftest import record, write_blob

D = dt.date(2026, 4, 14)
NEXT = D + dt.timedelta(days=1)
FORMATS = Path(__file__).resolve().parents[3] / "shared" / "data" / "formats"
MB = 1 << 20

# (case id, line, expected outcome): "kept" or the quarantine reason.
CASES: list[tuple[str, Any, str]] = []


def case(case_id: str, expected: str, ts: str = "2026-04-14T08:00:00Z", **fields: Any) -> None:
    CASES.append((case_id, record(ts, DeviceAction=case_id, **fields), expected))


def raw_case(case_id: str, expected: str, line: str) -> None:
    CASES.append((case_id, line, expected))


def tagged(case_id: str, ts: str = "2026-04-14T08:00:00Z", **fields: Any) -> str:
    return json.dumps(record(ts, DeviceAction=case_id, **fields))


# Wrong types, numbers as strings, missing and extra columns.
case("sent-abc", "bad_bytes", SentBytes="abc")
case("sent-float", "bad_bytes", SentBytes=1.5)
case("sent-negative", "bad_bytes", SentBytes=-1)
case("sent-huge", "bad_bytes", SentBytes=10**30)
case("sent-bool", "bad_bytes", SentBytes=True)
case("sent-object", "bad_bytes", SentBytes={"n": 1})
case("numbers-as-strings", "kept", SourcePort="50001", DestinationPort=" 443 ", SentBytes="7")
case("sent-null", "kept", SentBytes=None)
case("port-70000", "bad_port", DestinationPort=70000)
case("port-negative", "bad_port", SourcePort=-5)
case("port-string", "bad_port", DestinationPort="https")
case("port-zero", "kept", SourcePort=0, SourcePort_note=None)
case("ip-null", "missing_ip", SourceIP=None)
case("ip-empty", "missing_ip", DestinationIP="   ")
case("ip-bad-octet", "bad_ip", DestinationIP="256.1.1.1")
case("ip-leading-zero", "bad_ip", DestinationIP="010.1.1.1")
case("ip-hostname", "bad_ip", DestinationIP="evil.example")
case("ip-object", "bad_ip", SourceIP={"ip": "10.0.0.1"})
case("ipv6-full", "kept", SourceIP="2001:0DB8:0000:0000:0000:0000:0000:0001")
case("ipv6-compressed", "kept", DestinationIP="2001:db8::42")
case("ipv6-mapped", "kept", DestinationIP="::ffff:198.51.100.7")
case("ipv6-link-local", "kept", SourceIP="fe80::1", DestinationIP="2001:db8:1::9")
case("ipv6-double-gap", "bad_ip", DestinationIP="2001::db8::1")
case("ipv6-triple-colon", "bad_ip", DestinationIP="2001:::1")
case("ipv6-nine-groups", "bad_ip", DestinationIP="1:2:3:4:5:6:7:8:9")
case("ipv6-zone", "bad_ip", SourceIP="fe80::1%eth0")
case("no-protocol-no-vendor", "kept", Protocol=None, DeviceVendor=None, DeviceProduct=None)
case("drift", "kept", NewVendorField="x", **{"z" * 100: 1})
# The session's span (long connections): ISO 8601, end not before start.
case("span-ok", "kept", StartTime="2026-04-14T06:00:00Z", EndTime="2026-04-14T08:00:00Z")
case("span-start-only", "kept", StartTime="2026-04-14T06:00:00Z")
case("span-garbage", "bad_time_range", StartTime="six o'clock")
case(
    "span-reversed",
    "bad_time_range",
    StartTime="2026-04-14T09:00:00Z",
    EndTime="2026-04-14T08:00:00Z",
)
# Timestamps in other formats, or outside the day.
case("portal-time", "kept", ts="4/14/2026, 10:52:35.857 AM")
case("portal-time-pm", "kept", ts="4/14/2026, 1:02:03 PM")
case("offset-time", "kept", ts="2026-04-14T10:00:00+02:00")
case("seven-digits", "kept", ts="2026-04-14T08:00:01.1234567Z")
case("date-only", "bad_timestamp", ts="2026-04-14")
case("year-only", "bad_timestamp", ts="2026")
case("epoch-number", "bad_timestamp", ts=1776153600)
case("time-garbage", "bad_timestamp", ts="yesterday at 10:00")
case("time-empty", "missing_timestamp", ts="")
case("other-day", "timestamp_outside_folder_day", ts="2026-04-12T08:00:00Z")
case("next-day", "timestamp_outside_folder_day", ts="2026-04-15T08:00:00Z")
# Lines that are not exactly one JSON object.
raw_case("not-json", "malformed_json", '<html>502 Bad Gateway "not-json"</html>')
raw_case(
    "truncated-line",
    "malformed_json",
    json.dumps({"DeviceAction": "truncated-line", **record("2026-04-14T08:00:00Z")})[:80],
)
raw_case("two-objects", "malformed_json", tagged("two-objects") + tagged("two-objects-b"))
raw_case("trailing-text", "malformed_json", tagged("trailing-text") + " trailing")
raw_case("array", "malformed_json", "[" + tagged("array") + "]")
raw_case("closing-bracket", "malformed_json", tagged("closing-bracket") + '] ,[{"x":1}')
raw_case("comma-joined", "malformed_json", tagged("comma-joined") + "," + tagged("comma-b"))
raw_case("json-string", "malformed_json", json.dumps("json-string as a bare string"))
raw_case(
    "duplicate-key", "duplicate_key", tagged("duplicate-key")[:-1] + ', "SourceIP": "1.2.3.4"}'
)
raw_case(
    "wrong-case-keys",
    "missing_timestamp",
    json.dumps({"timegenerated": "x", "id": "wrong-case-keys"}),
)


def run_days(spark, export: Path, lake_url: str, days: list[dt.date], vendors=()) -> dict:
    per_day, late = blobs_for_days(str(export), days)
    urls = [b.url for d in days for b in per_day[d]] + [b.url for b in late]
    return network_sessions.run(
        spark, lake_url=lake_url, days=days, blob_urls=urls, device_vendors=vendors
    )


def read(lake_url: str, table: str, day: dt.date) -> pd.DataFrame:
    path = Lake(lake_url).day_url(table, day)
    return pd.read_parquet(path) if os.path.exists(path) else pd.DataFrame()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("hostile")
    export = root / "export"
    lines = [line for _, line, _ in CASES]
    write_blob(export, D, 8, 0, [*lines, "", "   "])  # + two blank lines
    # Truncated blob: the export stopped mid-append (no final newline).
    truncated = write_blob(export, D, 8, 5, [tagged("trunc-ok-1"), tagged("trunc-ok-2")])
    with truncated.open("a") as handle:
        handle.write(tagged("trunc-cut")[:45])
    write_blob(export, D, 8, 10, [])  # empty blob
    html = ["<!DOCTYPE html>", "<html><body>", "Service Unavailable", "</body></html>"]
    write_blob(export, D, 8, 15, html)  # a blob that is not JSON at all
    binary = write_blob(export, D, 8, 20, [])
    binary.write_bytes(gzip.compress((tagged("inside-gzip") + "\n").encode() * 200))
    # Lines of several megabytes: a valid record with a huge extra field, and huge garbage.
    big = record(
        "2026-04-14T09:00:00Z", DeviceAction="big-valid", AdditionalExtensions="x" * 3 * MB
    )
    write_blob(export, D, 9, 0, [json.dumps(big), "y" * (4 * MB)])
    # Exact and near duplicates from export retries (another folder, another key order,
    # another precision), and ICMP records (no ports) that differ only in precision.
    first = record("2026-04-14T10:00:00.1234567Z", DeviceAction="dup", SourcePort=51000)
    write_blob(
        export,
        D,
        10,
        0,
        [
            json.dumps(first),
            json.dumps(first),
            json.dumps(dict(reversed(list(first.items())))),
            json.dumps({**first, "TimeGenerated": "2026-04-14T10:00:00.123Z"}),
            json.dumps({**first, "TimeGenerated": "2026-04-14T10:00:00Z", "SentBytes": "100"}),
            json.dumps({**first, "TimeGenerated": "2026-04-14T10:00:01Z"}),  # next second
            json.dumps(
                record(
                    "2026-04-14T10:00:00.5Z",
                    DeviceAction="icmp",
                    Protocol="ICMP",
                    SourcePort=None,
                    DestinationPort=None,
                )
            ),
            json.dumps(
                record(
                    "2026-04-14T10:00:00Z",
                    DeviceAction="icmp",
                    Protocol="ICMP",
                    SourcePort=None,
                    DestinationPort=None,
                )
            ),
        ],
    )
    write_blob(export, D, 10, 5, [json.dumps(first)])  # the retry lands in a later folder
    lake_url = str(root / "lake")
    report = run_days(spark, export, lake_url, [D])[D.isoformat()]
    return {
        "report": report,
        "sessions": read(lake_url, "network_sessions", D),
        "quarantine": read(lake_url, "quarantine", D),
        "lake_url": lake_url,
        "export": export,
    }


def test_every_case_lands_where_expected(hostile):
    sessions, quarantine = hostile["sessions"], hostile["quarantine"]
    for case_id, _, expected in CASES:
        kept = sessions[sessions["DeviceAction"] == case_id]
        held = quarantine[quarantine["record"].str.contains(f'"{case_id}', regex=False)]
        if expected == "kept":
            assert len(kept) == 1 and held.empty, case_id
        else:
            assert kept.empty, case_id
            assert list(held["reason"]) == [expected], case_id
            assert held["source_file"].str.endswith("/d=14/h=08/m=00/PT05M.json").all()


def test_counts_add_up_to_the_lines_written(hostile):
    report, sessions, quarantine = hostile["report"], hostile["sessions"], hostile["quarantine"]
    written = 0
    for blob in hostile["export"].rglob("*.json"):
        # Spark's text reader splits on \n, \r\n and \r; a final line without \n still counts.
        data = blob.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        written += data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert report["lines"] == written
    assert report["lines"] == (
        report["rows"]
        + report["duplicates_dropped"]
        + report["quarantined"]
        + report["vendor_filtered"]
        + report["blank_lines"]
    )
    assert report["rows"] == len(sessions)
    assert report["quarantined"] == len(quarantine)
    assert report["blank_lines"] == 2
    assert sum(report["quarantine_reasons"].values()) == report["quarantined"]
    assert report["quarantine_ratio"] == pytest.approx(
        report["quarantined"]
        / (report["rows"] + report["duplicates_dropped"] + report["quarantined"])
    )
    manifest = Lake(hostile["lake_url"]).read_manifest("network_sessions", D)
    assert manifest["quarantined"] == report["quarantined"]
    assert manifest["lines"] == written


def test_truncated_empty_and_non_json_blobs(hostile):
    sessions, quarantine = hostile["sessions"], hostile["quarantine"]
    assert {"trunc-ok-1", "trunc-ok-2"} <= set(sessions["DeviceAction"])
    cut = quarantine[quarantine["source_file"].str.endswith("/m=05/PT05M.json")]
    assert list(cut["reason"]) == ["malformed_json"]
    html = quarantine[quarantine["source_file"].str.endswith("/m=15/PT05M.json")]
    assert sorted(html["record"]) == sorted(
        ["<!DOCTYPE html>", "<html><body>", "Service Unavailable", "</body></html>"]
    )
    gz = quarantine[quarantine["source_file"].str.endswith("/h=08/m=20/PT05M.json")]
    assert len(gz) >= 1 and set(gz["reason"]) == {"malformed_json"}
    assert "inside-gzip" not in set(sessions["DeviceAction"])
    assert not quarantine["source_file"].str.endswith("/m=10/PT05M.json").any()  # empty blob


def test_lines_of_several_megabytes(hostile):
    sessions, quarantine = hostile["sessions"], hostile["quarantine"]
    assert "big-valid" in set(sessions["DeviceAction"])
    huge = quarantine[quarantine["source_file"].str.contains("/h=09/")]
    assert list(huge["reason"]) == ["malformed_json"]
    assert huge["record"].str.len().tolist() == [4 * MB]  # kept whole, not cut


def test_schema_drift_is_reported_by_column_name(hostile):
    report = hostile["report"]
    assert report["unknown_columns"]["NewVendorField"] == 1
    assert report["unknown_columns"]["z" * 64] == 1  # names are cut to 64 characters
    assert "SourcePort_note" in report["unknown_columns"]
    assert "AdditionalExtensions" not in report["unknown_columns"]  # a CommonSecurityLog column
    assert "Type" not in report["unknown_columns"]
    assert report["unknown_column_names"] == len(report["unknown_columns"])


def test_ipv6_is_kept_and_typed(hostile):
    sessions = hostile["sessions"].set_index("DeviceAction")
    assert sessions.loc["ipv6-full", "SourceIP"] == "2001:0db8:0000:0000:0000:0000:0000:0001"
    assert sessions.loc["ipv6-compressed", "DestinationIP"] == "2001:db8::42"
    assert sessions.loc["ipv6-mapped", "DestinationIP"] == "::ffff:198.51.100.7"


def test_other_timestamp_formats_are_typed_in_utc(hostile):
    sessions = hostile["sessions"].set_index("DeviceAction")
    assert sessions.loc["portal-time", "TimeGenerated"] == pd.Timestamp("2026-04-14 10:52:35.857")
    assert sessions.loc["portal-time-pm", "TimeGenerated"] == pd.Timestamp("2026-04-14 13:02:03")
    assert sessions.loc["offset-time", "TimeGenerated"] == pd.Timestamp("2026-04-14 08:00:00")
    assert sessions.loc["seven-digits", "TimeGenerated"] == pd.Timestamp(
        "2026-04-14 08:00:01.123456"
    )
    assert sessions.loc["numbers-as-strings", "DestinationPort"] == 443


def test_exact_and_near_duplicates_follow_the_documented_rule(hostile):
    sessions, report = hostile["sessions"], hostile["report"]
    dup = sessions[sessions["DeviceAction"] == "dup"].sort_values("TimeGenerated")
    # Six copies in the same second (two folders, key order, 7/3/0 fractional digits,
    # bytes as a string) are one connection, kept with the most precise time; the copy one
    # second later is another connection.
    assert dup["TimeGenerated"].tolist() == [
        pd.Timestamp("2026-04-14 10:00:00.123456"),
        pd.Timestamp("2026-04-14 10:00:01"),
    ]
    # ICMP has no source port: only exactly equal times are merged.
    assert len(sessions[sessions["DeviceAction"] == "icmp"]) == 2
    assert report["duplicates_dropped"] == 5


def test_vendor_filter_counts_records_without_a_vendor(spark, tmp_path):
    export = tmp_path / "export"
    write_blob(
        export,
        D,
        1,
        0,
        [
            record("2026-04-14T01:00:00Z"),
            record("2026-04-14T01:00:01Z", DeviceVendor=None),
            record("2026-04-14T01:00:02Z", DeviceVendor="Check Point"),
        ],
    )
    # A late record of D in the next day's folder, from a filtered vendor: counted for D.
    write_blob(export, NEXT, 1, 0, [record("2026-04-14T23:59:00Z", DeviceVendor="Palo Alto")])
    report = run_days(spark, export, str(tmp_path / "lake"), [D], vendors=("Fortinet",))
    assert report[D.isoformat()]["rows"] == 1
    assert report[D.isoformat()]["vendor_filtered"] == 3
    assert report[D.isoformat()]["lines"] == 4


def test_a_day_whose_blobs_are_all_empty(spark, tmp_path):
    export = tmp_path / "export"
    for minute in (0, 5, 10):
        write_blob(export, D, 0, minute, [])
    lake_url = str(tmp_path / "lake")
    report = run_days(spark, export, lake_url, [D])[D.isoformat()]
    assert report["lines"] == report["rows"] == report["quarantined"] == 0
    assert report["quarantine_ratio"] == 0.0
    # The day exists (manifest) with zero rows: not mistaken for a missing day.
    assert Lake(lake_url).days_present("network_sessions", [D]) == [D]
    assert Lake(lake_url).read_manifest("network_sessions", D)["rows"] == 0


def test_a_workspace_that_appears_mid_window(spark, tmp_path):
    export = tmp_path / "export"
    second = (
        "/subscriptions/00000000-0000-0000-0000-000000000002/resourcegroups/soc2/providers/"
        "microsoft.operationalinsights/workspaces/ws-two"
    )
    write_blob(export, D, 1, 0, [record("2026-04-14T01:00:00Z")])
    write_blob(export, NEXT, 1, 0, [record("2026-04-15T01:00:00Z")])
    write_blob(export, NEXT, 2, 0, [record("2026-04-15T02:00:00Z")], workspace=second)
    lake_url = str(tmp_path / "lake")
    report = run_days(spark, export, lake_url, [D, NEXT])
    assert report[D.isoformat()]["rows"] == 1
    assert report[NEXT.isoformat()]["rows"] == 2
    sessions = read(lake_url, "network_sessions", NEXT)
    assert sorted(sessions["workspace"]) == ["sentinel-ws", "ws-two"]


def test_real_portal_export_sample(spark, tmp_path):
    """Sentinel's own Fortigate sample (a portal export: a pretty-printed JSON array, portal
    timestamps, numeric Protocol). As a blob it is not JSON lines: every line is quarantined
    and counted. Its records, written as JSON lines, are typed and kept."""
    sample = FORMATS / "azure_sentinel_CEF_Fortigate.json"
    records = json.loads(sample.read_text())
    day = dt.date(2022, 3, 31)
    export = tmp_path / "export"
    as_is = write_blob(export, day, 10, 0, [])
    as_is.write_bytes(sample.read_bytes())
    write_blob(export, day, 10, 5, records)
    lake_url = str(tmp_path / "lake")
    report = run_days(spark, export, lake_url, [day])[day.isoformat()]
    sessions = read(lake_url, "network_sessions", day)
    quarantine = read(lake_url, "quarantine", day)
    raw_lines = sample.read_bytes().replace(b"\r\n", b"\n").splitlines()
    non_blank = [line for line in raw_lines if line.strip()]
    assert (quarantine["source_file"].str.endswith("/m=00/PT05M.json")).sum() == len(non_blank)
    assert set(quarantine["reason"]) == {"malformed_json"}
    assert report["blank_lines"] == len(raw_lines) - len(non_blank)
    assert report["rows"] == len(sessions) == len(records) == 2
    assert set(sessions["SourceIP"]) == {r["SourceIP"] for r in records}
    assert set(sessions["Protocol"]) == {"TCP"}
    assert set(sessions["TimeGenerated"]) == {pd.Timestamp("2022-03-31 10:52:35.857")}
    assert sessions["SentBytes"].isna().all()  # absent in the sample: null, not a rejection


# --- property: whatever the records, every line is in the output or in quarantine ------------

LINE_BREAKS = "\n\r"
ANY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=LINE_BREAKS),
    max_size=40,
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    ANY_TEXT,
)
IN_DAY = st.datetimes(min_value=dt.datetime(2026, 4, 13, 20), max_value=dt.datetime(2026, 4, 15, 4))
TIMESTAMPS = st.one_of(
    IN_DAY.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    IN_DAY.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    IN_DAY.map(lambda t: f"{t.month}/{t.day}/{t.year}, {t:%I:%M:%S} {t:%p}"),
    JSON_SCALARS,
)
IPS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded.upper()),
    JSON_SCALARS,
)
NUMBERS = st.one_of(
    st.integers(min_value=-10, max_value=70_000),
    st.integers(min_value=-10, max_value=70_000).map(str),
    JSON_SCALARS,
)
MAYBE_MISSING = object()
FIELDS = {
    "TimeGenerated": TIMESTAMPS,
    "SourceIP": IPS,
    "DestinationIP": IPS,
    "SourcePort": NUMBERS,
    "DestinationPort": NUMBERS,
    "SentBytes": NUMBERS,
    "ReceivedBytes": NUMBERS,
    "Protocol": st.one_of(st.sampled_from(["TCP", "udp", "6", "17", "ICMP"]), JSON_SCALARS),
    "DeviceVendor": st.one_of(st.sampled_from(["Fortinet", "Check Point"]), JSON_SCALARS),
}
EXTRA_KEYS = ANY_TEXT.filter(lambda k: k not in KNOWN_COLUMNS)


@st.composite
def hostile_record(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, values in FIELDS.items():
        value = draw(st.one_of(values, st.just(MAYBE_MISSING)))
        if value is not MAYBE_MISSING:
            fields[name] = value
    fields.update(draw(st.dictionaries(EXTRA_KEYS, JSON_SCALARS, max_size=3)))
    return fields


# A line: a tagged record sent 1-3 times (export retries), or any text at all.
LINES = st.lists(
    st.one_of(
        st.tuples(hostile_record(), st.integers(min_value=1, max_value=3)),
        ANY_TEXT,
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(items=LINES)
def test_every_generated_line_is_in_the_output_or_in_quarantine(spark, items):
    lines: list[str] = []
    copies: dict[str, int] = {}
    garbage = 0
    for i, item in enumerate(items):
        if isinstance(item, str):
            lines.append(item)
            garbage += 1
            continue
        fields, times = item
        tag = f"id{i}"
        copies[tag] = times
        lines += [json.dumps({**fields, "DeviceAction": tag})] * times
    with tempfile.TemporaryDirectory() as folder:
        export = Path(folder) / "export"
        write_blob(export, D, 13, 0, lines)
        lake_url = str(Path(folder) / "lake")
        report = run_days(spark, export, lake_url, [D])[D.isoformat()]
        sessions = read(lake_url, "network_sessions", D)
        quarantine = read(lake_url, "quarantine", D)

    assert report["lines"] == len(lines)
    assert report["vendor_filtered"] == 0
    assert len(sessions) + report["duplicates_dropped"] + len(quarantine) + report[
        "blank_lines"
    ] == len(lines)
    assert report["rows"] == len(sessions) and report["quarantined"] == len(quarantine)
    kept = sessions["DeviceAction"].value_counts().to_dict() if len(sessions) else {}
    records = quarantine["record"].tolist() if len(quarantine) else []
    held = {tag: sum(f'"DeviceAction": "{tag}"' in r for r in records) for tag in copies}
    for tag, times in copies.items():
        # Each tagged record is one session row, or all its copies are in quarantine.
        assert (kept.get(tag, 0), held[tag]) in {(1, 0), (0, times)}, tag
    assert set(kept) <= set(copies)  # text lines never become sessions
    untagged = len(records) - sum(held.values())
    assert untagged + report["blank_lines"] == garbage


# --- through Dagster: the day's metadata counts, and a blocking check stops a bad day ---------


def test_a_bad_day_fails_the_blocking_quarantine_check_and_stops_downstream(tmp_path):
    import dagster as dg

    from pipeline.definitions import build_definitions
    from pipeline.resources.spark import SparkJobRunner, spark_config
    from pipeline.settings import load_settings

    export = tmp_path / "export"
    good = [record(f"2026-04-14T08:{m:02d}:00Z", SourcePort=40000 + m) for m in range(18)]
    bad = ["not json", json.dumps(record("2026-04-14T08:30:00Z", SentBytes="abc"))]
    write_blob(export, D, 8, 0, [*good, *bad, ""])
    settings = load_settings(
        {
            "BEACON_SOURCE": "export",
            "BEACON_EXPORT_URL": str(export),
            "BEACON_LAKE_URL": str(tmp_path / "lake"),
            "BEACON_START_DATE": "2026-04-01",
            "BEACON_SPARK_MASTER": "local[2]",
            "BEACON_MAX_QUARANTINE_RATIO": "0.05",
        }
    )
    defs = build_definitions(settings)
    result = dg.materialize(
        list(defs.assets),
        selection=dg.AssetSelection.assets(
            "network_sessions", "pair_daily_stats", "beaconing_candidates", "enriched_beacons"
        ),
        partition_key=D.isoformat(),
        resources={"spark": SparkJobRunner(spark_config=spark_config(settings))},
        raise_on_error=False,
    )
    by_key = {
        m.asset_key.path[-1]: m for m in result.asset_materializations_for_node("spark_stages")
    }
    materialization = by_key["network_sessions"]
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["lines"] == 21 and metadata["rows"] == 18 and metadata["quarantined"] == 2
    assert metadata["blank_lines"] == 1
    assert metadata["quarantine_reasons"] == {"malformed_json": 1, "bad_bytes": 1}
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["quarantine_ratio_within_limit"] is False  # 2 / 20 = 10 % > 5 %
    # The Spark stages are one submission, so pair_daily_stats was summarised alongside; the failed
    # blocking check fails that step, and nothing downstream of it runs: the day is not published.
    assert "pair_daily_stats" in by_key
    assert not result.asset_materializations_for_node("enriched_beacons")  # blocked
    assert not result.success
