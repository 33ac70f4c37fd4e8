"""Spark jobs on a Synapse pool, end to end: real Dagster, the real azure-core / azure-identity /
azure-storage-blob / dagster-azure Pipes clients, Azurite for the staging storage, and a fake Livy
server (pipeline_tests/fakes/livy.py) that runs each submitted batch with local Spark.

Each real batch starts a JVM (~8 s here): five run a job (three succeed, one of them the three
Spark stages of a day in one batch; one fails inside the job, one is cancelled); the other cases
are refused before anything runs.
"""

from __future__ import annotations

import _thread
import datetime as dt
import json
import os
import shutil
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from azure.storage.blob import BlobServiceClient

from pipeline.azure.credentials import forget_credential
from pipeline.azure.livy import CODE_FOLDER, StagingLocation, staging_blob_service, upload_code
from pipeline.definitions import build_definitions, spark_runner
from pipeline.lake import Lake
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.resources.synapse import SynapseJobRunner
from pipeline.settings import Settings
from pipeline.spark import packaging
from pipeline_tests.conftest import record, write_blob
from pipeline_tests.fakes.livy import running_livy

DAY = dt.date(2026, 11, 20)
POOL = "beaconpool"
STAGING_CONTAINER = "staging"
STAGING_URL = f"abfss://{STAGING_CONTAINER}@devstoreaccount1.dfs.core.windows.net/beacon"


def _write_export(root: Path) -> None:
    """A small day: one 5-minute beacon, some background traffic, a malformed line."""
    start = dt.datetime.combine(DAY, dt.time(8), tzinfo=dt.UTC)
    beacon = [
        record((start + dt.timedelta(minutes=5 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        for i in range(60)
    ]
    background = [
        record(
            (start + dt.timedelta(seconds=97 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            src=f"10.0.0.{20 + i % 7}",
            dst=f"198.51.100.{i % 11}",
            SentBytes=100 + i,
        )
        for i in range(120)
    ]
    for hour in range(8, 14):
        in_hour = [
            r
            for r in beacon + background
            if dt.datetime.fromisoformat(r["TimeGenerated"]).hour == hour
        ]
        write_blob(root, DAY, hour, 0, in_hour + (["{not json"] if hour == 9 else []))


def _settings(tmp: Path, lake_dir: Path, export: Path, endpoint: str = "") -> Settings:
    return Settings(
        source="export",
        export_url=str(export),
        lake_url=str(lake_dir),
        start_date=DAY - dt.timedelta(days=3),
        spark_master="local[2]",
        spark_mode="synapse" if endpoint else "local",
        synapse_workspace="beaconws",
        synapse_spark_pool=POOL,
        synapse_endpoint=endpoint or None,
        synapse_staging_url=STAGING_URL,
        min_window_coverage=0.0,
    )


def _materialize(settings: Settings, asset: str | list[str], runner, instance=None):
    assets = list(build_definitions(settings).assets)
    return dg.materialize(
        assets,
        selection=[asset] if isinstance(asset, str) else asset,
        resources={"spark": runner},
        partition_key=DAY.isoformat(),
        instance=instance,
        raise_on_error=False,
    )


def _fast(runner: SynapseJobRunner) -> SynapseJobRunner:
    """The configured runner, polling at most every 2 s so tests do not wait out 15 s sleeps."""
    return SynapseJobRunner(**{**runner.model_dump(), "poll_max_s": 2.0})


def _table_rows(lake_url: str, table: str) -> list[str]:
    frame = pd.read_parquet(Lake(lake_url).day_url(table, DAY))

    def plain(value):
        return value.tolist() if isinstance(value, np.ndarray) else value

    return sorted(
        json.dumps({k: plain(v) for k, v in row.items()}, default=str, sort_keys=True)
        for row in frame.to_dict("records")
    )


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


def _failure_text(result) -> str:
    texts = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None:
            texts.append(f"{error.cls_name}: {error.message}")
            error = error.cause
    return "\n".join(texts)


def _copy_table(source: str, target: Path, table: str) -> None:
    shutil.copytree(Path(source) / table, target / table)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, spark):
    """The export, and the lake the same steps produce in-process with local Spark."""
    root = tmp_path_factory.mktemp("synapse")
    export = root / "export"
    _write_export(export)
    settings = _settings(root, root / "reference-lake", export)
    local = SparkJobRunner(spark_config=spark_config(settings))
    for asset in ("network_sessions", "pair_daily_stats"):
        assert _materialize(settings, asset, local).success
    return root, export, settings.lake_url


@pytest.fixture(scope="module")
def livy(tmp_path_factory, test_ca, azurite):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    if not service.get_container_client(STAGING_CONTAINER).exists():
        service.create_container(STAGING_CONTAINER)
    with running_livy(
        test_ca, POOL, azurite.connection_string, tmp_path_factory.mktemp("livy")
    ) as served:
        yield served


@pytest.fixture
def pool(livy, az_cli, azurite, monkeypatch):
    """The fake pool reachable with the stub az identity; Azurite as the staging account."""
    endpoint, state = livy
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    forget_credential()
    state.die_next_submit = state.reject_tokens = False
    yield endpoint, state, az_cli
    forget_credential()


def test_network_sessions_on_the_pool_equals_the_local_run(reference, pool, tmp_path):
    root, export, reference_lake = reference
    endpoint, state, _ = pool
    settings = _settings(root, tmp_path / "lake", export, endpoint)
    runner = _fast(spark_runner(settings))
    instance = dg.DagsterInstance.ephemeral()
    submitted = len(state.bodies)

    result = _materialize(settings, "network_sessions", runner, instance)

    assert result.success, _failure_text(result)
    for table in ("network_sessions", "quarantine"):
        assert _table_rows(settings.lake_url, table) == _table_rows(reference_lake, table)
    pool_manifest = Lake(settings.lake_url).read_manifest("network_sessions", DAY)
    local_manifest = Lake(reference_lake).read_manifest("network_sessions", DAY)
    assert pool_manifest["rows"] == local_manifest["rows"] == 180
    assert pool_manifest["quarantined"] == local_manifest["quarantined"] == 1
    # The asset's metadata came from the report the pool sent back through Pipes.
    [materialization] = result.asset_materializations_for_node("spark_stages")
    assert materialization.asset_key.path == ["network_sessions"]
    assert materialization.metadata["rows"].value == 180
    # What was submitted: the entry script and zip on the staging account, sizes, conf.
    body = state.bodies[submitted]
    assert body["file"].startswith(f"{STAGING_URL}/{CODE_FOLDER}/")
    assert body["file"].endswith("/entry.py") and body["pyFiles"][0].endswith("/pipeline.zip")
    assert body["args"][:2] == ["--job", "pipeline.spark.steps:run"]
    assert "--dagster-pipes-context" in body["args"]
    assert (body["executorCores"], body["executorMemory"], body["numExecutors"]) == (4, "28g", 2)
    assert body["conf"]["spark.sql.sources.partitionOverwriteMode"] == "dynamic"
    assert body["conf"]["spark.sql.session.timeZone"] == "UTC"
    # The run's log holds the driver log and the job's own Pipes log lines (code from the zip).
    messages = "\n".join(_messages(instance, result.run_id))
    assert "driver log:\nbeacon entry: starting pipeline.spark.steps:run" in messages
    assert "pool: running pipeline.spark.steps:run on Spark" in messages
    assert "pipeline.zip" in messages
    assert "beacon steps: 1/1 pipeline.ingest.network_sessions:run done" in messages
    assert "pool: pipeline.spark.steps:run finished" in messages


def test_a_daily_run_of_the_spark_stages_is_one_batch(reference, pool, tmp_path):
    """Sessions, pair summaries and candidates of a day wait for one pool start, not three."""
    root, export, reference_lake = reference
    endpoint, state, _ = pool
    settings = _settings(root, tmp_path / "lake", export, endpoint)
    submitted = len(state.bodies)
    instance = dg.DagsterInstance.ephemeral()

    result = _materialize(
        settings,
        ["network_sessions", "pair_daily_stats", "beaconing_candidates"],
        _fast(spark_runner(settings)),
        instance,
    )

    assert result.success, _failure_text(result)
    assert len(state.bodies) == submitted + 1
    materialized = [
        m.asset_key.path[-1] for m in result.asset_materializations_for_node("spark_stages")
    ]
    assert materialized == ["network_sessions", "pair_daily_stats", "beaconing_candidates"]
    for table in ("network_sessions", "pair_daily_stats"):
        assert _table_rows(settings.lake_url, table) == _table_rows(reference_lake, table)
    assert Lake(settings.lake_url).read_manifest("beaconing_candidates", DAY) is not None
    messages = "\n".join(_messages(instance, result.run_id))
    for number, job in enumerate(
        ("ingest.network_sessions", "detect.pair_daily_stats", "detect.beaconing_candidates"),
        start=1,
    ):
        assert f"beacon steps: {number}/3 pipeline.{job}:run done" in messages


def test_code_is_uploaded_once_per_version(reference, pool, tmp_path, azurite):
    root, export, reference_lake = reference
    endpoint, _, _ = pool
    lake_dir = tmp_path / "lake"
    _copy_table(reference_lake, lake_dir, "network_sessions")
    settings = _settings(root, lake_dir, export, endpoint)
    location = StagingLocation.parse(STAGING_URL)
    package = packaging.current_package()
    upload_code(staging_blob_service(location), location, package)  # there, whoever ran first
    container = BlobServiceClient.from_connection_string(
        azurite.connection_string
    ).get_container_client(STAGING_CONTAINER)
    code_prefix = f"beacon/{CODE_FOLDER}/"
    before = {b.name: b.etag for b in container.list_blobs(name_starts_with=code_prefix)}
    instance = dg.DagsterInstance.ephemeral()

    result = _materialize(settings, "pair_daily_stats", _fast(spark_runner(settings)), instance)

    assert result.success, _failure_text(result)
    after = {b.name: b.etag for b in container.list_blobs(name_starts_with=code_prefix)}
    assert after == before
    assert sorted(after) == [
        f"{code_prefix}{package.version}/entry.py",
        f"{code_prefix}{package.version}/pipeline.zip",
    ]
    messages = "\n".join(_messages(instance, result.run_id))
    assert f"code version {package.version} already at" in messages
    assert _table_rows(settings.lake_url, "pair_daily_stats") == _table_rows(
        reference_lake, "pair_daily_stats"
    )


def test_a_batch_that_dies_fails_the_step_with_the_driver_log_tail(reference, pool, tmp_path):
    root, export, _ = reference
    endpoint, _, _ = pool
    # No network_sessions in this lake: the job raises on the pool, the batch ends dead.
    settings = _settings(root, tmp_path / "lake", export, endpoint)

    result = _materialize(settings, "pair_daily_stats", _fast(spark_runner(settings)))

    assert not result.success
    text = _failure_text(result)
    assert "ended dead (result Failed)" in text
    assert "driver log line(s)" in text
    assert "Traceback (most recent call last)" in text
    assert "network_sessions is missing for 2026-11-20" in text
    assert Lake(settings.lake_url).read_manifest("pair_daily_stats", DAY) is None
    assert not (tmp_path / "lake" / "pair_daily_stats").exists()


def test_a_batch_dead_at_submit_fails_with_livy_diagnostics(reference, pool, tmp_path):
    root, export, reference_lake = reference
    endpoint, state, _ = pool
    lake_dir = tmp_path / "lake"
    _copy_table(reference_lake, lake_dir, "network_sessions")
    settings = _settings(root, lake_dir, export, endpoint)
    state.die_next_submit = True

    result = _materialize(settings, "pair_daily_stats", _fast(spark_runner(settings)))

    assert not result.success
    text = _failure_text(result)
    assert "ended dead (result Failed)" in text
    assert "Could not allocate the requested cores" in text
    assert Lake(settings.lake_url).read_manifest("pair_daily_stats", DAY) is None


def test_interrupting_the_run_cancels_the_batch(reference, pool, tmp_path):
    root, export, reference_lake = reference
    endpoint, state, _ = pool
    lake_dir = tmp_path / "lake"
    _copy_table(reference_lake, lake_dir, "network_sessions")
    settings = _settings(root, lake_dir, export, endpoint)
    batch_id = len(state.batches)

    def interrupt_once_running() -> None:
        state.wait_for_state(batch_id, {"running"})
        time.sleep(1.0)  # let the runner see it running and the job's JVM start
        _thread.interrupt_main()  # what terminating a run / Ctrl-C delivers to the step

    watcher = threading.Thread(target=interrupt_once_running, daemon=True)
    watcher.start()
    result = _materialize(settings, "pair_daily_stats", _fast(spark_runner(settings)))
    watcher.join(timeout=60)

    # Dagster's signal handler turned the interrupt into the error a terminated run raises.
    assert not result.success
    assert "DagsterExecutionInterruptedError" in _failure_text(result)
    batch = state.batches[batch_id]
    assert ("DELETE", f"{state.batches_path}/{batch_id}") in state.requests
    assert batch.state == "killed" and batch.result == "Cancelled"
    assert batch.process is not None and batch.process.poll() is not None
    with pytest.raises(ProcessLookupError):  # the JVM went with its process group
        os.killpg(batch.process.pid, 0)
    assert Lake(settings.lake_url).read_manifest("pair_daily_stats", DAY) is None


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("expired", "expired token for Synapse"),
        ("error", "az login"),
        ("refused", "refused (401"),
    ],
)
def test_credential_problems_fail_clearly_before_any_batch(
    reference, pool, tmp_path, mode, expected
):
    root, export, _ = reference
    endpoint, state, az_cli = pool
    if mode == "refused":
        state.reject_tokens = True
    else:
        az_cli.set_mode(mode)
    settings = _settings(root, tmp_path / "lake", export, endpoint)
    submitted = len(state.bodies)

    result = _materialize(settings, "pair_daily_stats", _fast(spark_runner(settings)))

    assert not result.success
    text = _failure_text(result)
    assert expected in text
    assert "AzureAccessError" in text or "Synapse" in text
    assert len(state.bodies) == submitted
    assert "fake-token-for" not in text
