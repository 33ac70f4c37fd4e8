"""Production run storage: dagster.postgres.yaml against a real PostgreSQL server.

The test starts PostgreSQL (Debian's binaries, pipeline_tests/fakes/postgres.py), installs
dagster.postgres.yaml as DAGSTER_HOME's dagster.yaml the way the README's deploy steps do, runs
the documented CLI materialization in a subprocess and reads the run and its materialization
back from the database.
"""

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from dagster._core.instance.ref import InstanceRef

from pipeline_tests.fakes.postgres import running_postgres

REPO = Path(__file__).resolve().parents[2]
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)


@pytest.fixture(scope="module")
def postgres():
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_home(postgres, tmp_path, monkeypatch):
    """DAGSTER_HOME holding dagster.postgres.yaml as its dagster.yaml, DAGSTER_PG_* set."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in postgres.env().items():
        monkeypatch.setenv(name, value)
    return home


def test_cli_materialization_is_recorded_in_postgres(postgres, postgres_home, tmp_path):
    env = {
        **os.environ,
        "BEACON_SOURCE": "sample",
        "BEACON_EXPORT_URL": str(tmp_path / "export"),
        "BEACON_LAKE_URL": str(tmp_path / "lake"),
        "BEACON_START_DATE": (DAY - dt.timedelta(days=7)).isoformat(),
    }
    completed = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "pipeline.definitions",
            "--select",
            "commonsecuritylog_export",
            "--partition",
            DAY.isoformat(),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "export").exists()

    # Straight from the database: the run row and the materialization event.
    with (
        psycopg2.connect(
            host=postgres.host,
            port=postgres.port,
            user=postgres.user,
            password=postgres.password,
            dbname=postgres.database,
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT run_id, status FROM runs")
        runs = cursor.fetchall()
        assert [status for _, status in runs] == ["SUCCESS"]
        cursor.execute(
            "SELECT run_id, asset_key, partition FROM event_logs "
            "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
        materializations = cursor.fetchall()
    assert materializations == [(runs[0][0], '["commonsecuritylog_export"]', DAY.isoformat())]
    # No SQLite storage was written beside it.
    assert not list(postgres_home.rglob("*.db"))

    # And through Dagster's own API, as the webserver and daemon will read it.
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(postgres_home)))
    try:
        event = instance.get_latest_materialization_event(dg.AssetKey("commonsecuritylog_export"))
        assert event is not None
        assert event.run_id == runs[0][0]
        assert event.asset_materialization.partition == DAY.isoformat()
        assert event.asset_materialization.metadata["records"].value > 0
    finally:
        instance.dispose()


def test_production_instance_queues_one_run_at_a_time(postgres_home):
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(postgres_home)))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 1
        assert queue.tag_concurrency_limits == [
            {"key": "dagster/partition", "limit": 1, "value": {"applyLimitPerUniqueValue": True}}
        ]
        assert instance.run_monitoring_enabled
    finally:
        instance.dispose()


def test_doctor_reaches_the_postgres_instance(postgres_home, tmp_path):
    env = {**os.environ, "BEACON_LAKE_URL": str(tmp_path / "lake")}
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "doctor"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "[ok] dagster instance:" in completed.stdout, completed.stdout + completed.stderr
    assert "PostgresRunStorage reachable" in completed.stdout
    assert "FAIL" not in completed.stdout
    assert completed.returncode == 0


def test_missing_database_settings_name_the_variable(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "x")
    monkeypatch.setenv("DAGSTER_PG_DB", "x")
    with pytest.raises(Exception, match="DAGSTER_PG_HOST"):
        dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
