"""Query mode against the fake Log Analytics server, through the real azure-monitor-query client,
the real DefaultAzureCredential (stub `az`) and, end to end, real Dagster and local Spark."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from pipeline.azure.credentials import AzureAccessError
from pipeline.azure.log_analytics import LogAnalytics, LogAnalyticsError
from pipeline.definitions import build_definitions
from pipeline.ingest import export_layout, query_export
from pipeline.lake import Lake
from pipeline.lake.schemas import EXPORT_COLUMNS
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.settings import Settings
from pipeline_tests.fakes.az_cli import token_for
from pipeline_tests.fakes.log_analytics import (
    FakeLogAnalytics,
    common_security_log_columns,
    running_log_analytics,
)

# Each test gets the identity of its own stub `az` (the credential is cached per process).
pytestmark = pytest.mark.usefixtures("fresh_credential")

WORKSPACE_ID = "0a1b2c3d-0000-1111-2222-333344445555"
DAY = dt.date(2026, 11, 20)
MIDNIGHT = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
ROW_LIMIT = 1000
BURST_ROWS = 1200  # in one 5-minute bin: more than the fake's row limit
LOG = logging.getLogger("test_query_mode")


def make_rows(seed: int = 7) -> list[dict]:
    """CommonSecurityLog rows of DAY (spread out, plus one burst), and a few on the days around."""
    rng = random.Random(seed)
    rows = []

    def add(stamp: dt.datetime) -> None:
        index = len(rows)
        rows.append(
            {
                "TenantId": "11111111-2222-3333-4444-555555555555",
                "TimeGenerated": stamp,
                "DeviceVendor": "Fortinet" if index % 4 else "Check Point",
                "DeviceProduct": "Fortigate" if index % 4 else "VPN-1 & FireWall-1",
                "DeviceAction": "accept",
                "Activity": "traffic",
                "SourceIP": f"10.1.{index % 7}.{index % 200 + 1}",
                "SourcePort": 20000 + index,  # unique: no row is a duplicate of another
                "DestinationIP": f"203.0.113.{index % 250 + 1}",
                "DestinationPort": rng.choice([443, 80, 8443]),
                "DestinationHostName": rng.choice([None, "example.com", "cdn.example.net"]),
                "Protocol": rng.choice(["TCP", "UDP"]),
                "SentBytes": rng.randint(40, 5000),
                "ReceivedBytes": rng.choice([None, rng.randint(40, 90000)]),
                "Type": "CommonSecurityLog",
            }
        )

    for _ in range(2300):
        add(MIDNIGHT + dt.timedelta(microseconds=rng.randrange(86_400 * 10**6)))
    burst = MIDNIGHT + dt.timedelta(hours=10)
    for _ in range(BURST_ROWS):
        add(burst + dt.timedelta(microseconds=rng.randrange(300 * 10**6)))
    for offset in (-1, 1):  # neighbours: never part of DAY
        for _ in range(50):
            add(MIDNIGHT + dt.timedelta(days=offset, microseconds=rng.randrange(86_400 * 10**6)))
    return rows


ROWS = make_rows()


def expected_records(vendors: tuple[str, ...] = ()) -> list[dict]:
    """DAY's rows as data export would write them: the pipeline's columns, ISO 8601 with Z."""
    records = []
    for row in ROWS:
        stamp = row["TimeGenerated"]
        if stamp.date() != DAY or (vendors and row["DeviceVendor"] not in vendors):
            continue
        record = {column: row.get(column) for column in EXPORT_COLUMNS}
        record["TimeGenerated"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
        records.append(record)
    return records


def key(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


@pytest.fixture
def fake() -> FakeLogAnalytics:
    workspace = FakeLogAnalytics(WORKSPACE_ID, row_limit=ROW_LIMIT)
    workspace.add_table("CommonSecurityLog", common_security_log_columns(), ROWS)
    return workspace


@pytest.fixture
def endpoint(az_cli, test_ca, fake):
    with running_log_analytics(test_ca, fake) as url:
        # The client asks for a token whose audience is its endpoint; the fake checks it.
        fake.expected_token = token_for(url)
        yield url


def query_settings(tmp_path: Path, endpoint: str, **overrides) -> Settings:
    values = dict(
        source="query",
        export_url=str(tmp_path / "export"),
        lake_url=str(tmp_path / "lake"),
        log_analytics_workspace_id=WORKSPACE_ID,
        log_analytics_endpoint=endpoint,
        query_max_rows_per_slice=900,
        start_date=DAY - dt.timedelta(days=3),
        spark_master="local[2]",
    )
    values.update(overrides)
    return Settings(**values)


def written_records(settings: Settings, day: dt.date = DAY) -> list[dict]:
    blobs = export_layout.list_day_blobs(settings.export_url, day)
    return [
        json.loads(line)
        for blob in blobs
        for line in Path(blob.url).read_text().splitlines()
        if line
    ]


def day_files(settings: Settings) -> dict[str, str]:
    root = Path(settings.export_url)
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.json"))}


def staging_leftovers(settings: Settings) -> list[Path]:
    staging = Path(settings.export_url) / query_export.STAGING_FOLDER
    return list(staging.rglob("*")) if staging.exists() else []


def fast_client(settings: Settings, retry_total: int = 2) -> LogAnalytics:
    """The pipeline's client with short backoffs, for the cases that exhaust retries."""
    return LogAnalytics(
        settings.log_analytics_workspace_id,
        settings.log_analytics_endpoint,
        retry_total=retry_total,
        retry_backoff_s=0.01,
    )


# --- a day lands whole, in the export layout ------------------------------------------------------


def test_day_is_written_in_the_export_layout_with_every_row_once(tmp_path, endpoint, fake):
    settings = query_settings(tmp_path, endpoint)
    pulled = query_export.pull_day(settings, DAY, LOG)

    expected = expected_records()
    records = written_records(settings)
    assert sorted(map(key, records)) == sorted(map(key, expected))
    assert pulled.rows == pulled.counted == len(expected)
    # Counting first plans slices under 900 rows; the burst's bin (1,200 rows in 5 minutes) is
    # one slice the fake truncates at 1,000 rows, so it is halved.
    assert pulled.slices >= 4
    assert pulled.halvings >= 1
    truncated = [r for r in fake.requests if r.partial]
    assert truncated and all(r.rows == ROW_LIMIT for r in truncated)
    assert all(r.rows <= ROW_LIMIT for r in fake.requests)
    # Every record sits in the 5-minute folder of its own TimeGenerated, on DAY.
    for blob in export_layout.list_day_blobs(settings.export_url, DAY):
        assert export_layout.layout_of(blob.url) == "PT05M"
        folder = export_layout.FOLDER_TIME.search(blob.url)
        for line in Path(blob.url).read_text().splitlines():
            stamp = dt.datetime.fromisoformat(json.loads(line)["TimeGenerated"][:26])
            assert stamp.date() == DAY
            assert (stamp.hour, stamp.minute - stamp.minute % 5) == (
                int(folder.group(4)),
                int(folder.group(5)),
            )
    workspace = query_export.export_workspace_resource_id(settings)
    assert workspace.endswith(f"/workspaces/{WORKSPACE_ID}")
    assert export_layout.list_day_blobs(settings.export_url, DAY, workspace)
    assert staging_leftovers(settings) == []


def test_the_query_asks_only_for_the_day_and_the_pipeline_columns(tmp_path, endpoint, fake):
    settings = query_settings(tmp_path, endpoint)
    query_export.pull_day(settings, DAY, LOG)
    row_queries = [r for r in fake.requests if r.kind == "rows"]
    assert row_queries
    for request in row_queries:
        assert request.query.endswith("| project " + ", ".join(EXPORT_COLUMNS))
        start, end = (dt.datetime.fromisoformat(t) for t in request.timespan.split("/"))
        assert MIDNIGHT <= start < end <= MIDNIGHT + dt.timedelta(days=1)
    counts = [r for r in fake.requests if r.kind == "count"]
    assert len(counts) == 1
    assert "summarize count() by bin(TimeGenerated, 5m)" in counts[0].query


def test_vendor_filter_is_applied_in_the_query(tmp_path, endpoint, fake):
    settings = query_settings(tmp_path, endpoint, device_vendors=("Check Point",))
    query_export.pull_day(settings, DAY, LOG)
    assert sorted(map(key, written_records(settings))) == sorted(
        map(key, expected_records(("Check Point",)))
    )
    assert all('DeviceVendor in ("Check Point")' in r.query for r in fake.requests)


def test_pulling_a_day_again_replaces_it(tmp_path, endpoint, fake):
    settings = query_settings(tmp_path, endpoint)
    query_export.pull_day(settings, DAY, LOG)
    first = written_records(settings)
    query_export.pull_day(settings, DAY, LOG)
    assert sorted(map(key, written_records(settings))) == sorted(map(key, first))
    assert staging_leftovers(settings) == []


# --- throttling and server errors ---------------------------------------------------------------


def test_throttled_query_is_retried_after_retry_after(tmp_path, endpoint, fake):
    settings = query_settings(tmp_path, endpoint)
    fake.throttle(1, retry_after="1", after=2)
    pulled = query_export.pull_day(settings, DAY, LOG)

    assert pulled.throttled == 1
    assert sorted(map(key, written_records(settings))) == sorted(map(key, expected_records()))
    statuses = [r.status for r in fake.requests]
    throttled_at = statuses.index(429)
    retry = fake.requests[throttled_at + 1]
    assert retry.query == fake.requests[throttled_at].query
    assert retry.status == 200
    # The client waited at least the Retry-After the fake asked for before asking again.
    assert retry.arrived - fake.requests[throttled_at].arrived >= 1.0


def test_server_error_is_retried(tmp_path, endpoint, fake):
    settings = query_settings(tmp_path, endpoint)
    fake.fail(1, status=503, after=3)
    pulled = query_export.pull_day(settings, DAY, LOG)

    assert pulled.server_errors == 1
    assert pulled.rows == len(expected_records())
    failed_at = [r.status for r in fake.requests].index(503)
    assert fake.requests[failed_at + 1].query == fake.requests[failed_at].query
    assert fake.requests[failed_at + 1].status == 200


def test_lasting_throttling_fails_clearly_and_keeps_the_previous_day(tmp_path, endpoint, fake):
    settings = query_settings(tmp_path, endpoint)
    query_export.pull_day(settings, DAY, LOG)
    before = day_files(settings)

    fake.throttle(50, retry_after="0.05", after=3)  # mid-day: some slices already arrived
    with pytest.raises(LogAnalyticsError, match=r"HTTP 429\) after 2 retries") as caught:
        query_export.pull_day(settings, DAY, LOG, client=fast_client(settings))
    assert "Retry-After" in str(caught.value)
    assert day_files(settings) == before
    assert staging_leftovers(settings) == []


def test_lasting_server_errors_fail_clearly_and_leave_no_partial_day(tmp_path, endpoint, fake):
    settings = query_settings(tmp_path, endpoint)
    fake.fail(1000, status=500, after=3)
    with pytest.raises(LogAnalyticsError, match="kept failing") as caught:
        query_export.pull_day(settings, DAY, LOG, client=fast_client(settings))
    assert "retry later" in str(caught.value)
    assert "HTTP 500" in str(caught.value)
    assert export_layout.list_day_blobs(settings.export_url, DAY) == []
    assert staging_leftovers(settings) == []
    # Halving is bounded: a service that is down does not cost thousands of queries.
    assert len(fake.requests) < 40


def test_too_many_rows_in_one_second_fails_clearly(tmp_path, endpoint, fake):
    second = MIDNIGHT + dt.timedelta(hours=3)
    crowd = [{**ROWS[0], "TimeGenerated": second, "SourcePort": p} for p in range(ROW_LIMIT + 5)]
    fake.add_table("CommonSecurityLog", common_security_log_columns(), ROWS + crowd)
    settings = query_settings(tmp_path, endpoint)
    with pytest.raises(LogAnalyticsError, match="even as a") as caught:
        query_export.pull_day(settings, DAY, LOG)
    assert "E_QUERY_RESULT_SET_TOO_LARGE" in str(caught.value)
    assert export_layout.list_day_blobs(settings.export_url, DAY) == []
    assert staging_leftovers(settings) == []


# --- identity and configuration -----------------------------------------------------------------


@pytest.mark.parametrize(("mode", "words"), [("expired", "expired"), ("error", "az login")])
def test_unusable_credentials_fail_clearly_before_any_query(
    tmp_path, endpoint, fake, az_cli, mode, words
):
    az_cli.set_mode(mode)
    settings = query_settings(tmp_path, endpoint)
    with pytest.raises(AzureAccessError, match="no usable Azure identity") as caught:
        query_export.pull_day(settings, DAY, LOG)
    assert words in str(caught.value)
    assert "Log Analytics Reader" in str(caught.value)
    assert fake.requests == []  # no token (expired or otherwise) was sent
    assert export_layout.list_day_blobs(settings.export_url, DAY) == []


def test_token_for_another_audience_is_refused_clearly(tmp_path, endpoint, fake):
    fake.expected_token = token_for("https://api.loganalytics.io")
    settings = query_settings(tmp_path, endpoint)
    with pytest.raises(AzureAccessError, match="refused the identity") as caught:
        query_export.pull_day(settings, DAY, LOG)
    assert "HTTP 401" in str(caught.value)
    assert "LOG_ANALYTICS_ENDPOINT" in str(caught.value)


def test_unknown_workspace_names_the_setting(tmp_path, endpoint):
    settings = query_settings(
        tmp_path, endpoint, log_analytics_workspace_id="99999999-0000-1111-2222-333344445555"
    )
    with pytest.raises(LogAnalyticsError, match="LOG_ANALYTICS_WORKSPACE_ID"):
        query_export.pull_day(settings, DAY, LOG)


def test_empty_day_fails_naming_what_to_check(tmp_path, endpoint):
    settings = query_settings(tmp_path, endpoint, device_vendors=("Palo Alto Networks",))
    with pytest.raises(
        LogAnalyticsError, match="no CommonSecurityLog rows on 2026-11-20"
    ) as caught:
        query_export.pull_day(settings, DAY, LOG)
    assert "BEACON_DEVICE_VENDORS" in str(caught.value)
    assert export_layout.list_day_blobs(settings.export_url, DAY) == []


def test_a_query_the_service_rejects_is_reported_with_its_message(tmp_path, endpoint):
    settings = query_settings(tmp_path, endpoint)
    with (
        fast_client(settings) as client,
        pytest.raises(LogAnalyticsError, match="rejected the query") as caught,
    ):
        client.query("CommonSecurityLog | take 5", MIDNIGHT, MIDNIGHT + dt.timedelta(hours=1))
    assert "take" in str(caught.value)


# --- end to end: Dagster + Spark ----------------------------------------------------------------


def test_query_mode_day_through_dagster_into_the_lake(tmp_path, endpoint, fake, spark):
    settings = query_settings(tmp_path, endpoint)
    fake.throttle(1, retry_after="1", after=2)
    fake.fail(1, status=503, after=4)
    assets = list(build_definitions(settings).assets)
    result = dg.materialize(
        assets,
        selection=dg.AssetSelection.assets("commonsecuritylog_export", "network_sessions"),
        resources={"spark": SparkJobRunner(spark_config=spark_config(settings))},
        partition_key=DAY.isoformat(),
    )
    assert result.success

    materializations = [
        e.event_specific_data.materialization for e in result.get_asset_materialization_events()
    ]
    export_meta = {m.asset_key.to_user_string(): m.metadata for m in materializations}
    meta = export_meta["commonsecuritylog_export"]
    expected = expected_records()
    assert meta["records"].value == len(expected)
    assert meta["slices"].value >= 4
    assert meta["halvings"].value >= 1
    assert meta["throttled"].value == 1
    assert meta["server_errors"].value == 1
    assert meta["retries"].value == 2
    assert export_meta["network_sessions"]["rows"].value == len(expected)

    frame = pd.read_parquet(Lake(settings.lake_url).day_url("network_sessions", DAY))
    stamps = pd.to_datetime(frame["TimeGenerated"])
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")
    got = sorted(
        (
            stamp.strftime("%Y-%m-%dT%H:%M:%S.%f"),
            row.SourceIP,
            int(row.SourcePort),
            row.DestinationIP,
            int(row.DestinationPort),
            row.Protocol,
            int(row.SentBytes),
            None if pd.isna(row.ReceivedBytes) else int(row.ReceivedBytes),
            row.DeviceVendor,
        )
        for stamp, row in zip(stamps, frame.itertuples(), strict=True)
    )
    want = sorted(
        (
            r["TimeGenerated"][:26],
            r["SourceIP"],
            r["SourcePort"],
            r["DestinationIP"],
            r["DestinationPort"],
            r["Protocol"],
            r["SentBytes"],
            r["ReceivedBytes"],
            r["DeviceVendor"],
        )
        for r in expected
    )
    assert got == want
