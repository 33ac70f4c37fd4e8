"""Daily runs against a long-lived Spark (`python -m pipeline spark-server`, Spark Connect).

A real Connect server from pyspark's own package, started the way the docs say; the Dagster CLI
runs the chain against it as a user would (`BEACON_SPARK=cluster`, `sc://`), and its output must
equal what the in-process local session writes from the same export.
"""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipeline.definitions import build_definitions
from pipeline.doctor import diagnose
from pipeline.ingest.sample import write_export_day
from pipeline.lake import Lake
from pipeline.resources.spark import SparkJobRunner, running_connect_server, spark_config
from pipeline.settings import Settings

FIRST = dt.date(2026, 9, 14)
LAST = dt.date(2026, 9, 15)
DAYS = [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
MATERIALIZE = [
    str(Path(sys.executable).with_name("dagster")),
    *("asset", "materialize", "-m", "pipeline.definitions", "--select", "*"),
]
TABLES = ("network_sessions", "pair_daily_stats", "beaconing_candidates")


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """`python -m pipeline spark-server` on a free port; its URL, stopped after the module."""
    log_path = tmp_path_factory.mktemp("connect") / "server.log"
    with running_connect_server(
        str(log_path), master="local[2]", env={"BEACON_SPARK_DRIVER_MEMORY": "1g"}
    ) as url:
        yield url


def _settings(tmp_path: Path, export: Path, name: str) -> dict[str, str]:
    return {
        "BEACON_SOURCE": "export",
        "BEACON_EXPORT_URL": str(export),
        "BEACON_LAKE_URL": str(tmp_path / name),
        "BEACON_START_DATE": FIRST.isoformat(),
        "BEACON_MIN_WINDOW_COVERAGE": "0.1",
    }


@pytest.mark.slow
def test_a_range_run_on_spark_connect_writes_what_local_spark_writes(
    connect_server, tmp_path, spark
):
    export = tmp_path / "export"
    for day in [*DAYS, LAST + dt.timedelta(days=1)]:  # + the next day, for late records
        write_export_day(export, day)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(Path("dagster.yaml").read_text())
    remote = _settings(tmp_path, export, "lake_connect")
    done = subprocess.run(
        [*MATERIALIZE, "--partition-range", f"{FIRST.isoformat()}...{LAST.isoformat()}"],
        env={
            **os.environ,
            **remote,
            "DAGSTER_HOME": str(home),
            "BEACON_SPARK": "cluster",
            "BEACON_SPARK_MASTER": connect_server,
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr + done.stdout

    # The same range on this process's local session.
    local_env = _settings(tmp_path, export, "lake_local")
    settings = Settings(
        source="export",
        export_url=local_env["BEACON_EXPORT_URL"],
        lake_url=local_env["BEACON_LAKE_URL"],
        start_date=FIRST,
        min_window_coverage=0.1,
        spark_master="local[2]",
    )
    local = dg.materialize(
        list(build_definitions(settings).assets),
        resources={"spark": SparkJobRunner(spark_config=spark_config(settings))},
        tags={
            "dagster/asset_partition_range_start": FIRST.isoformat(),
            "dagster/asset_partition_range_end": LAST.isoformat(),
        },
    )
    assert local.success

    for table in TABLES:
        for day in DAYS:
            urls = [Lake(env["BEACON_LAKE_URL"]).day_url(table, day) for env in (remote, local_env)]
            ours, theirs = (spark.read.parquet(url) for url in urls)
            assert ours.count() == theirs.count(), (table, day)
            assert ours.count() > 0, (table, day)
            assert ours.exceptAll(theirs).count() == 0, (table, day)


@pytest.mark.slow
def test_the_server_runs_the_clients_code_not_what_it_has_installed(connect_server):
    # The candidates' scoring is a pandas function that runs on the server's Python workers:
    # it must come from the client's code (shipped as a zip), whatever the server has.
    script = (
        "from pipeline.resources.spark import SparkJobRunner, spark_config\n"
        "from pipeline.settings import Settings\n"
        f"settings = Settings(spark_mode='cluster', spark_master={connect_server!r})\n"
        "spark = SparkJobRunner(spark_config=spark_config(settings)).spark_session\n"
        "def where(batches):\n"
        "    import pandas as pd, pipeline\n"
        "    for batch in batches:\n"
        "        yield pd.DataFrame({'file': [pipeline.__file__] * len(batch)})\n"
        "print(spark.range(1).mapInPandas(where, 'file string').first()['file'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported_from = done.stdout.strip().splitlines()[-1]
    assert "/pipeline-" in imported_from and ".zip/pipeline/__init__.py" in imported_from
    assert not imported_from.startswith(str(Path.cwd()))


def test_the_doctor_finds_the_server(connect_server):
    env = {"BEACON_SPARK": "cluster", "BEACON_SPARK_MASTER": connect_server}
    spark_finding = next(f for f in diagnose(env) if f.check == "spark")
    assert spark_finding.ok, spark_finding
    assert connect_server in spark_finding.detail
