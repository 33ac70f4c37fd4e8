"""The export container and the lake on Azure storage, through the real SDKs against Azurite.

Azurite serves the Blob API of `devstoreaccount1` on a loopback port; the pipeline reaches it the
way it reaches Azure with a connection string (AZURE_STORAGE_CONNECTION_STRING, whose
BlobEndpoint wins over the host an abfss:// URL names). Nothing is patched: adlfs and
azure-storage-blob speak HTTP to Azurite, local Spark reads the staged day, Dagster runs the
assets.
"""

import datetime as dt
import json
import tempfile
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from azure.storage.blob import BlobServiceClient

from pipeline.azure import storage
from pipeline.definitions import build_definitions
from pipeline.detect import allowlist, plots
from pipeline.ingest.export_layout import (
    blobs_for_days,
    hour_folder,
    list_day_blobs,
    workspace_path,
)
from pipeline.ingest.sample import DEFAULT_WORKSPACE
from pipeline.ingest.sensors import late_export_requests
from pipeline.lake import Lake
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.settings import Settings
from pipeline_tests.conftest import record
from pipeline_tests.fakes.azurite import ACCOUNT

TODAY = dt.datetime.now(dt.UTC).date()
# Inside the late-export sensor's 14-day scan.
DAY = TODAY - dt.timedelta(days=3)
NEXT = DAY + dt.timedelta(days=1)


def abfss(container: str, path: str = "") -> str:
    """How production names a container: the Azurite account through the dfs host."""
    return f"abfss://{container}@{ACCOUNT}.dfs.core.windows.net/{path}"


@pytest.fixture
def blob_service(azurite, monkeypatch) -> BlobServiceClient:
    """The connection string in the environment, as a deployment against Azurite would set it."""
    monkeypatch.setenv(storage.CONNECTION_STRING_ENV, azurite.connection_string)
    storage.forget_filesystems()
    yield BlobServiceClient.from_connection_string(azurite.connection_string)
    storage.forget_filesystems()


def fresh_container(service: BlobServiceClient, prefix: str) -> str:
    """A new container per test: the Azurite server is shared by the session."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    service.create_container(name)
    return name


def upload_blob(service, container, day, hour, minute, lines, name="PT05M.json"):
    folder = hour_folder(workspace_path(DEFAULT_WORKSPACE), day, hour, minute)
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    service.get_container_client(container).upload_blob(f"{folder}/{name}", text, overwrite=True)
    return f"{folder}/{name}"


def upload_day(service, container) -> dict[str, int]:
    """A small export day in both layouts, a late record in the next day and one bad line."""
    minutes = [0, 5, 10]
    for hour in (0, 8, 23):
        for minute in minutes:
            upload_blob(
                service,
                container,
                DAY,
                hour,
                minute,
                [
                    record(
                        f"{DAY}T{hour:02d}:{minute:02d}:{second:02d}Z", SourcePort=40000 + second
                    )
                    for second in (1, 2)
                ],
            )
    upload_blob(service, container, DAY, 12, 0, [record(f"{DAY}T12:00:00Z")], name="PT1H.json")
    upload_blob(service, container, DAY, 12, 0, ["<html>502</html>"], name="PT1H_1.json")
    upload_blob(service, container, NEXT, 1, 0, [record(f"{DAY}T23:59:59Z")])
    # 9 blobs x 2 records + the hourly record + the late record; one quarantined line.
    return {"rows": 3 * 3 * 2 + 1 + 1, "quarantined": 1}


def settings_for(tmp_path, export_url: str, **overrides) -> Settings:
    values = dict(
        source="export",
        export_url=export_url,
        lake_url=str(tmp_path / "lake"),
        start_date=DAY - dt.timedelta(days=30),
        spark_master="local[2]",
    )
    values.update(overrides)
    return Settings(**values)


def materialize(settings: Settings, selection: list[str]) -> dg.ExecuteInProcessResult:
    defs = build_definitions(settings)
    return dg.materialize(
        list(defs.assets),
        selection=selection,
        resources={"spark": SparkJobRunner(spark_config=spark_config(settings))},
        partition_key=DAY.isoformat(),
        raise_on_error=False,
    )


# --- the lake's Python-side files on Azure storage -------------------------------------------


@pytest.mark.parametrize("form", ["az", "abfss"])
def test_manifests_and_driver_written_files_round_trip_on_blob_storage(blob_service, form):
    container = fresh_container(blob_service, "lake")
    lake_url = f"az://{container}/beacon" if form == "az" else abfss(container, "beacon")
    days = [DAY - dt.timedelta(days=2), DAY]
    for day in days:
        Lake(lake_url).write_manifest("pair_daily_stats", day, {"rows": day.day})
    assert Lake(lake_url).read_manifest("pair_daily_stats", DAY) == {
        "date": DAY.isoformat(),
        "rows": DAY.day,
    }
    assert Lake(lake_url).read_manifest("pair_daily_stats", NEXT) is None
    assert Lake(lake_url).latest_day("pair_daily_stats") == DAY
    asked = [*days, NEXT]
    assert Lake(lake_url).days_present("pair_daily_stats", asked) == days
    assert Lake(lake_url).latest_day("never_written") is None

    frame = pd.DataFrame({"SourceIP": ["10.0.0.5"], "score": [0.93]})
    written = Lake(lake_url).write_day_file("enriched_beacons", DAY, "part.parquet", frame)
    csv_url = Lake(lake_url).write_day_file(
        "sentinel_watchlist",
        DAY,
        "watchlist.csv",
        "SourceIP,DestinationIP\r\n10.0.0.5,203.0.113.9\r\n",
    )
    blobs = {b.name for b in blob_service.get_container_client(container).list_blobs()}
    prefix = f"beacon/enriched_beacons/date={DAY}/"
    assert f"{prefix}part.parquet" in blobs
    assert not any(name.endswith(".tmp") for name in blobs), "temporary files left behind"
    fs, path = storage.filesystem(written)
    with fs.open(path, "rb") as handle:
        assert pd.read_parquet(handle).equals(frame)
    fs, path = storage.filesystem(csv_url)
    with fs.open(path, "rb") as handle:
        # Byte-exact: newline translation would break Sentinel's CSV.
        assert handle.read() == b"SourceIP,DestinationIP\r\n10.0.0.5,203.0.113.9\r\n"

    fs, path = storage.filesystem(Lake(lake_url).manifest_url("pair_daily_stats", DAY))
    fs.rm(path)
    assert Lake(lake_url).latest_day("pair_daily_stats") == days[0]


def test_abfss_account_must_match_the_connection_string(blob_service):
    with pytest.raises(storage.StorageError, match=r"account 'otheraccount'.*'devstoreaccount1'"):
        storage.filesystem("abfss://lake@otheraccount.dfs.core.windows.net/x")


def test_a_lake_container_that_does_not_exist_fails_naming_it(blob_service):
    with pytest.raises(storage.StorageContainerMissingError) as error:
        Lake(abfss("no-such-lake", "beacon")).write_manifest("network_sessions", DAY, {"rows": 1})
    assert "'no-such-lake'" in str(error.value)
    assert f"'{ACCOUNT}'" in str(error.value)
    names = [c.name for c in blob_service.list_containers()]
    assert "no-such-lake" not in names, "the container was created instead of reported"


def test_the_allowlist_and_the_plots_use_the_lake_on_blob_storage(blob_service):
    """Driver-side readers and writers outside the lake module reach Azure storage the same way."""
    container = fresh_container(blob_service, "lake")
    lake_url = abfss(container, "beacon")
    blob_service.get_blob_client(container, f"beacon/{allowlist.ALLOWLIST_PATH}").upload_blob(
        b"kind,value,comment\ncidr,203.0.113.0/24,cdn\ndomain,vendor.example,updates\n"
    )
    assert allowlist.load(lake_url) == (
        (("cidr", "203.0.113.0/24"), ("domain", "vendor.example")),
        [],
    )

    pair = {"SourceIP": "10.0.0.5", "DestinationIP": "198.51.100.7", "DestinationPort": 443}
    event_ms = [60_000 * 5 * i for i in range(12)]
    stats = pd.DataFrame([{**pair, "Protocol": "TCP", "event_ms": event_ms}])
    Lake(lake_url).write_day_file("pair_daily_stats", DAY, "part.parquet", stats)
    Lake(lake_url).write_manifest("pair_daily_stats", DAY, {"rows": 1})
    candidates = pd.DataFrame(
        [
            {
                **pair,
                "Protocol": "TCP",
                "kind": "beacon",
                "score": 0.9,
                "interval_histogram": [0] * 25,
            }
        ]
    )
    url, png = plots.plot_day(lake_url, DAY, candidates)

    assert url == f"{Lake(lake_url).day_url(plots.PLOTS_TABLE, DAY)}/{plots.PLOT_NAME}"
    name = f"beacon/{plots.PLOTS_TABLE}/date={DAY}/{plots.PLOT_NAME}"
    stored = blob_service.get_blob_client(container, name).download_blob().readall()
    assert stored == png and png.startswith(b"\x89PNG")
    (times,) = plots.read_timelines(lake_url, candidates, [DAY]).values()
    midnight = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC).timestamp()
    assert list(times) == [midnight + ms / 1000 for ms in event_ms]


def test_the_allowlist_of_a_lake_whose_container_is_missing_fails_naming_it(blob_service):
    """Not an empty allowlist (every allowlisted destination would be reported again)."""
    with pytest.raises(storage.StorageContainerMissingError, match="'no-such-lake'"):
        allowlist.load(abfss("no-such-lake", "beacon"))


# --- the export container on Azure storage, through Dagster ------------------------------------


def test_export_day_on_blob_storage_materializes_into_the_lake(blob_service, tmp_path, monkeypatch):
    container = fresh_container(blob_service, "am-commonsecuritylog")
    expected = upload_day(blob_service, container)
    staging_parent = tmp_path / "tmp"
    staging_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging_parent))
    settings = settings_for(tmp_path, abfss(container))

    result = materialize(settings, ["commonsecuritylog_export", "network_sessions"])

    assert result.success
    export_meta = result.asset_materializations_for_node("commonsecuritylog_export")[0].metadata
    assert export_meta["files"].value == 11
    sessions = pd.read_parquet(Lake(settings.lake_url).day_url("network_sessions", DAY))
    assert len(sessions) == expected["rows"]
    assert set(sessions["SourceIP"]) == {"10.0.0.5"}
    assert (pd.to_datetime(sessions["TimeGenerated"]).dt.date == DAY).all()
    manifest = Lake(settings.lake_url).read_manifest("network_sessions", DAY)
    assert manifest["rows"] == expected["rows"]
    assert manifest["late_records"] == 1
    quarantine = pd.read_parquet(Lake(settings.lake_url).day_url("quarantine", DAY))
    assert list(quarantine["reason"]) == ["malformed_json"]
    # Read from a local copy, the quarantined line still names the remote blob it came from.
    assert quarantine["source_file"][0] == abfss(
        container, f"{hour_folder(workspace_path(DEFAULT_WORKSPACE), DAY, 12, 0)}/PT1H_1.json"
    )
    assert list(staging_parent.iterdir()) == [], "the staged export day was not removed"


def test_listed_blob_urls_keep_the_account_for_spark_on_a_cluster(blob_service):
    container = fresh_container(blob_service, "am-commonsecuritylog")
    upload_blob(blob_service, container, DAY, 3, 5, [record(f"{DAY}T03:05:00Z")])
    [blob] = list_day_blobs(abfss(container), DAY)
    folder = hour_folder(workspace_path(DEFAULT_WORKSPACE), DAY, 3, 5)
    assert blob.url == abfss(container, f"{folder}/PT05M.json")
    [by_workspace] = list_day_blobs(abfss(container), DAY, DEFAULT_WORKSPACE)
    assert by_workspace == blob
    [short] = list_day_blobs(f"az://{container}", DAY)
    assert short.url == f"az://{container}/{folder}/PT05M.json"
    assert blob.size == len(json.dumps(record(f"{DAY}T03:05:00Z"))) + 1


def test_missing_export_container_fails_naming_it_and_writes_no_day(blob_service, tmp_path):
    settings = settings_for(tmp_path, abfss("am-commonsecuritylog-missing"))

    result = materialize(settings, ["commonsecuritylog_export", "network_sessions"])

    assert not result.success
    [failure] = result.get_step_failure_events()
    error = failure.event_specific_data.error
    text = error.message + (error.cause.message if error.cause else "")
    assert "storage container 'am-commonsecuritylog-missing' does not exist" in text
    assert f"storage account '{ACCOUNT}'" in text
    assert not Path(settings.lake_url).exists(), "a failed day left files in the lake"


def test_late_export_sensor_sees_a_blob_that_lands_after_the_run(blob_service, tmp_path):
    container = fresh_container(blob_service, "am-commonsecuritylog")
    upload_day(blob_service, container)
    settings = settings_for(tmp_path, abfss(container))
    assert materialize(settings, ["commonsecuritylog_export", "network_sessions"]).success

    requests, cursor, _ = late_export_requests(settings, None, TODAY)
    assert requests == []

    upload_blob(blob_service, container, NEXT, 11, 55, [record(f"{DAY}T23:59:58Z")])
    requests, cursor, lines = late_export_requests(settings, cursor, TODAY)
    assert [r.partition_key for r in requests] == [DAY.isoformat()]
    # The day's 11 blobs plus the next day's early one, now two.
    assert "files 12 → 13" in lines[0]
    # Listed once per change: the cursor remembers the request.
    assert late_export_requests(settings, cursor, TODAY)[0] == []


def test_next_day_late_window_is_listed_from_blob_storage(blob_service):
    container = fresh_container(blob_service, "am-commonsecuritylog")
    upload_blob(blob_service, container, DAY, 0, 0, [record(f"{DAY}T00:00:00Z")])
    upload_blob(blob_service, container, NEXT, 11, 55, [record(f"{DAY}T23:59:00Z")])
    upload_blob(blob_service, container, NEXT, 12, 0, [record(f"{NEXT}T12:00:00Z")])
    per_day, late = blobs_for_days(abfss(container), [DAY])
    assert len(per_day[DAY]) == 1
    assert [b.hour for b in late] == [11]


def test_settings_refuse_a_remote_lake_for_local_spark():
    from pipeline.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="local Spark cannot write Azure storage"):
        load_settings({"BEACON_LAKE_URL": abfss("lake", "beacon")})
    cluster = load_settings({"BEACON_LAKE_URL": abfss("lake", "beacon"), "BEACON_SPARK": "cluster"})
    assert cluster.lake_url == abfss("lake", "beacon")


def test_without_a_connection_string_the_account_is_reached_with_default_credential(
    monkeypatch,
):
    """Unit level: which endpoint and credential adlfs is given (Azurite cannot check tokens)."""
    from azure.identity.aio import DefaultAzureCredential

    monkeypatch.delenv(storage.CONNECTION_STRING_ENV, raising=False)
    monkeypatch.delenv(storage.SAS_TOKEN_ENV, raising=False)
    monkeypatch.delenv(storage.ACCOUNT_NAME_ENV, raising=False)
    storage.forget_filesystems()
    try:
        fs = storage._blob_filesystem("prodlake", None, None)
        assert fs.account_url == "https://prodlake.blob.core.windows.net"
        assert isinstance(fs.credential, DefaultAzureCredential)
        with pytest.raises(storage.StorageError, match="no storage account"):
            storage.filesystem("az://lake/x")
    finally:
        storage.forget_filesystems()


def test_doctor_checks_the_export_container_and_names_a_missing_one(
    blob_service, tmp_path, monkeypatch
):
    from pipeline.doctor import diagnose

    container = fresh_container(blob_service, "am-commonsecuritylog")
    yesterday = TODAY - dt.timedelta(days=1)
    upload_blob(blob_service, container, yesterday, 6, 0, [record(f"{yesterday}T06:00:00Z")])
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "no-home"))
    env = {
        "BEACON_SOURCE": "export",
        "BEACON_EXPORT_URL": abfss(container),
        "BEACON_LAKE_URL": str(tmp_path / "lake"),
    }
    found = {f.check: f for f in diagnose(env)}
    assert found["export"].ok, found["export"].detail
    assert found["export"].detail.startswith(f"1 blobs for {yesterday}")
    assert found["lake"].ok
    assert not found["dagster instance"].ok
    assert "DAGSTER_HOME" in found["dagster instance"].detail

    missing = diagnose({**env, "BEACON_EXPORT_URL": abfss("am-commonsecuritylog-gone")})
    export = next(f for f in missing if f.check == "export")
    assert not export.ok
    assert "'am-commonsecuritylog-gone' does not exist" in export.detail
    assert f"'{ACCOUNT}'" in export.detail
