"""The pieces of the Synapse runner that need no pool: codec, packaging, settings, batch body."""

from __future__ import annotations

import datetime as dt
import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from azure.core.exceptions import ServiceResponseError

from pipeline.azure.credentials import azure_credential
from pipeline.azure.livy import LivyClient, StagingLocation, UploadedCode
from pipeline.definitions import build_definitions, spark_runner
from pipeline.detect import pair_daily_stats
from pipeline.detect.beaconing_candidates import DetectionParams
from pipeline.resources.spark import (
    SparkConnectUnreachableError,
    SparkJobRunner,
    require_connect_server,
    spark_config,
)
from pipeline.resources.synapse import NODE_SIZES, SynapseJobRunner, synapse_runner
from pipeline.settings import Settings, SettingsError, load_settings
from pipeline.spark import packaging, synapse_entry
from pipeline_tests.fakes.tls import serve_https

LAKE = "abfss://lake@beaconlake.dfs.core.windows.net/beacon"
EXPORT = "abfss://am-commonsecuritylog@beaconlake.dfs.core.windows.net/"
SYNAPSE_ENV = {
    "BEACON_SPARK": "synapse",
    "SYNAPSE_WORKSPACE": "beaconws",
    "SYNAPSE_SPARK_POOL": "pool1",
    "BEACON_LAKE_URL": LAKE,
    "BEACON_EXPORT_URL": EXPORT,
}


# --- codec ---------------------------------------------------------------------------------


def test_codec_round_trips_what_jobs_take_and_return():
    params = {
        "lake_url": LAKE,
        "days": [dt.date(2026, 11, 19), dt.date(2026, 11, 20)],
        "device_vendors": ("Check Point", "Fortinet"),
        "params": DetectionParams(
            lookback_days=21,
            first_day=dt.date(2026, 11, 1),
            internal_networks=("10.0.0.0/8",),
            min_connections=12,
            score_threshold=0.7,
            profile="default",
            allowlist=(("cidr", "203.0.113.0/24"),),
        ),
        "when": dt.datetime(2026, 11, 20, 13, 0, tzinfo=dt.UTC),
        "odd_keys": {("a", 1): {"$not_a_tag": 1}},
        "none": None,
    }
    text = synapse_entry.dumps(params)
    assert synapse_entry.loads(text) == params
    decoded = synapse_entry.loads(text)
    assert isinstance(decoded["device_vendors"], tuple)
    assert isinstance(decoded["params"], DetectionParams)
    assert isinstance(decoded["params"].allowlist[0], tuple)


def test_codec_turns_numpy_scalars_into_python_numbers():
    report = {"2026-11-20": {"rows": np.int64(3), "ratio": np.float32(0.5)}}
    assert synapse_entry.loads(synapse_entry.dumps(report)) == {
        "2026-11-20": {"rows": 3, "ratio": 0.5}
    }


def test_codec_refuses_what_it_cannot_carry():
    with pytest.raises(synapse_entry.CodecError, match="cannot send a PosixPath"):
        synapse_entry.encode({"x": Path("/tmp")})


def test_codec_rebuilds_only_the_pipelines_dataclasses():
    forged = {"$dataclass": "subprocess:Popen", "fields": {"args": ["true"]}}
    with pytest.raises(synapse_entry.CodecError, match=r"under pipeline\."):
        synapse_entry.decode(forged)


def test_jobs_are_named_and_resolved_only_in_the_spark_job_modules():
    name = synapse_entry.job_name(pair_daily_stats.run)
    assert name == "pipeline.detect.pair_daily_stats:run"
    assert synapse_entry.resolve_job(name) is pair_daily_stats.run
    with pytest.raises(synapse_entry.CodecError, match=r"Spark job modules"):
        synapse_entry.job_name(build_definitions)
    with pytest.raises(synapse_entry.CodecError):
        synapse_entry.resolve_job("os:system")


def test_entry_refuses_to_run_outside_pipes(capsys):
    assert synapse_entry.main(["--job", "x:y", "--pipes-account-url", "https://a"]) == 2
    assert "SynapseJobRunner" in capsys.readouterr().err


# --- packaging -------------------------------------------------------------------------------


def test_package_is_reproducible_and_holds_the_entry_and_pipes():
    first, second = packaging.build_package(), packaging.build_package()
    assert first.version == second.version and first.zip_bytes == second.zip_bytes
    assert len(first.version) == 16
    names = zipfile.ZipFile(io.BytesIO(first.zip_bytes)).namelist()
    assert "pipeline/spark/synapse_entry.py" in names
    assert "pipeline/detect/pair_daily_stats.py" in names
    assert "dagster_pipes/__init__.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert b"from pipeline.spark.synapse_entry import main" in first.entry_bytes


def test_package_version_follows_the_content(tmp_path):
    package = tmp_path / "pipeline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text("X = 1\n")
    (package / "notes.txt").write_text("not code")
    before = packaging.build_package((package,))
    assert before.files == ("pipeline/__init__.py", "pipeline/job.py")
    (package / "notes.txt").write_text("still not code")
    assert packaging.build_package((package,)).version == before.version
    (package / "job.py").write_text("X = 2\n")
    assert packaging.build_package((package,)).version != before.version


# --- settings and wiring ---------------------------------------------------------------------


def test_synapse_settings_load_with_their_defaults():
    settings = load_settings(SYNAPSE_ENV)
    assert settings.spark_mode == "synapse"
    assert (settings.synapse_workspace, settings.synapse_spark_pool) == ("beaconws", "pool1")
    assert settings.synapse_livy_api_version == "2020-12-01"
    assert (settings.synapse_executor_size, settings.synapse_executors) == ("small", 2)


def test_synapse_mode_names_everything_it_misses():
    with pytest.raises(SettingsError) as error:
        load_settings({"BEACON_SPARK": "synapse"})
    message = str(error.value)
    assert "SYNAPSE_WORKSPACE is required with BEACON_SPARK=synapse" in message
    assert "SYNAPSE_SPARK_POOL is required with BEACON_SPARK=synapse" in message
    assert "BEACON_LAKE_URL='./.data/lake': a Synapse pool cannot reach it" in message
    assert "BEACON_EXPORT_URL='./.data/export': a Synapse pool cannot reach it" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SYNAPSE_WORKSPACE", "Beacon_WS"),
        ("SYNAPSE_SPARK_POOL", "1pool"),
        ("SYNAPSE_SPARK_POOL", "pool-with-dash"),
        ("SYNAPSE_ENDPOINT", "http://beaconws.dev.azuresynapse.net"),
        ("SYNAPSE_ENDPOINT", "https://beaconws.dev.azuresynapse.net/livyApi"),
        ("SYNAPSE_LIVY_API_VERSION", "2018-01-01"),
        ("BEACON_SYNAPSE_EXECUTOR_SIZE", "huge"),
        ("BEACON_SYNAPSE_EXECUTORS", "0"),
        ("BEACON_SYNAPSE_STAGING_URL", "/tmp/staging"),
    ],
)
def test_bad_synapse_values_are_rejected(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load_settings({**SYNAPSE_ENV, variable: value})


def test_definitions_bind_the_runner_the_settings_ask_for():
    synapse = load_settings(SYNAPSE_ENV)
    assert isinstance(build_definitions(synapse).resources["spark"], SynapseJobRunner)
    local = Settings(lake_url="/tmp/lake")
    assert isinstance(spark_runner(local), SparkJobRunner)


def test_synapse_runner_targets_the_workspace_endpoint_and_the_lake():
    runner = synapse_runner(load_settings(SYNAPSE_ENV))
    assert runner.endpoint == "https://beaconws.dev.azuresynapse.net"
    assert runner.staging_url == LAKE
    # The conf the jobs rely on travels; the local session's master and memory do not.
    assert runner.spark_conf["spark.sql.sources.partitionOverwriteMode"] == "dynamic"
    assert runner.spark_conf["spark.sql.session.timeZone"] == "UTC"
    assert "spark.master" not in runner.spark_conf
    assert "spark.driver.memory" not in runner.spark_conf
    override = load_settings(
        {
            **SYNAPSE_ENV,
            "SYNAPSE_ENDPOINT": "https://127.0.0.1:8443",
            "BEACON_SYNAPSE_STAGING_URL": "abfss://code@other.dfs.core.windows.net/x",
        }
    )
    assert synapse_runner(override).endpoint == "https://127.0.0.1:8443"
    assert synapse_runner(override).staging_url == "abfss://code@other.dfs.core.windows.net/x"


@pytest.mark.parametrize("size", sorted(NODE_SIZES))
def test_batch_body_carries_the_node_size(size):
    runner = SynapseJobRunner(
        endpoint="https://w.dev.azuresynapse.net",
        spark_pool="pool1",
        staging_url=LAKE,
        executor_size=size,
        executors=3,
        spark_conf={"spark.sql.session.timeZone": "UTC"},
    )
    code = UploadedCode("abc", f"{LAKE}/_code/abc/entry.py", f"{LAKE}/_code/abc/pipeline.zip", True)
    body = runner.batch_body("pipeline.detect.pair_daily_stats:run", code, ["--job"], "r" * 36)
    cores, memory = NODE_SIZES[size]
    assert body["name"] == "beacon-pair_daily_stats-rrrrrrrr"
    assert (body["driverCores"], body["driverMemory"]) == (cores, memory)
    assert (body["executorCores"], body["executorMemory"], body["numExecutors"]) == (
        cores,
        memory,
        3,
    )
    assert body["file"] == code.entry_url and body["pyFiles"] == [code.zip_url]
    assert body["tags"]["code_version"] == "abc"


def test_staging_location_parses_abfss_and_refuses_local_paths():
    location = StagingLocation.parse("abfss://lake@beaconlake.dfs.core.windows.net/a/b/")
    assert (location.container, location.account, location.prefix) == ("lake", "beaconlake", "a/b")
    assert location.account_url == "https://beaconlake.blob.core.windows.net"
    assert location.abfss(location.blob_name("_code", "v1", "entry.py")) == (
        "abfss://lake@beaconlake.dfs.core.windows.net/a/b/_code/v1/entry.py"
    )
    with pytest.raises(ValueError, match="abfss://CONTAINER@ACCOUNT"):
        StagingLocation.parse("/tmp/lake")


def test_cluster_mode_with_spark_connect_sets_spark_remote_not_master():
    config = spark_config(Settings(spark_mode="cluster", spark_master="sc://spark.internal:15002"))
    assert config["spark.remote"] == "sc://spark.internal:15002"
    assert "spark.master" not in config
    assert config["spark.sql.session.timeZone"] == "UTC"
    plain = spark_config(Settings(spark_mode="cluster", spark_master="spark://head:7077"))
    assert plain["spark.master"] == "spark://head:7077" and "spark.remote" not in plain


def test_a_spark_connect_url_nobody_listens_at_fails_at_once_naming_the_server_command():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        require_connect_server(f"sc://127.0.0.1:{port}/;user_id=a")  # answers: no error
    with pytest.raises(SparkConnectUnreachableError, match="python -m pipeline spark-server"):
        require_connect_server(f"sc://127.0.0.1:{port}")


# --- Livy client ---------------------------------------------------------------------------


def test_a_livy_call_that_gets_no_answer_fails_instead_of_waiting(test_ca, az_cli):
    # A terminated run cancels its batch; a pool that stops answering must not hold it for
    # azure-core's default 300 s per attempt.
    released = threading.Event()

    class Silent(BaseHTTPRequestHandler):
        def do_DELETE(self) -> None:
            released.wait(60)

        def log_message(self, *args: object) -> None:
            pass

    with serve_https(test_ca, Silent) as url:
        livy = LivyClient(
            url, "pool1", "2020-12-01", azure_credential(), retry_backoff_s=0.01, read_timeout_s=0.5
        )
        try:
            with pytest.raises(ServiceResponseError, match="timed out"):
                livy.cancel(7)
        finally:
            released.set()
