"""The documented range command, as a user runs it: the Dagster CLI, export mode, an empty lake."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.ingest.sample import BEACONS, SampleNetwork, write_export_day
from pipeline.lake import Lake

FIRST = dt.date(2026, 10, 5)
LAST = dt.date(2026, 10, 7)
DAGSTER = Path(sys.executable).with_name("dagster")
MATERIALIZE = [str(DAGSTER), "asset", "materialize", "-m", "pipeline.definitions", "--select"]


def export_mode_env(tmp_path: Path, export: Path) -> dict[str, str]:
    """The environment a user sets for export mode, with a fresh Dagster home and lake."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(Path("dagster.yaml").read_text())
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BEACON_SOURCE": "export",
        "BEACON_EXPORT_URL": str(export),
        "BEACON_LAKE_URL": str(tmp_path / "lake"),
        "BEACON_START_DATE": FIRST.isoformat(),
        "BEACON_SPARK_MASTER": "local[2]",
    }


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["5min", "hourly"])
def test_partition_range_from_an_export_folder(tmp_path, layout):
    export = tmp_path / "export"
    for i in range((LAST - FIRST).days + 2):  # + the next day's folders, for late records
        write_export_day(export, FIRST + dt.timedelta(days=i), layout=layout)
    env = export_mode_env(tmp_path, export)
    command = [
        *MATERIALIZE,
        "*",
        "--partition-range",
        f"{FIRST.isoformat()}...{LAST.isoformat()}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr + done.stdout

    lake_url = env["BEACON_LAKE_URL"]
    for table in ("network_sessions", "pair_daily_stats", "beaconing_candidates"):
        days = Lake(lake_url).days_present(table, [FIRST, FIRST + dt.timedelta(days=1), LAST])
        assert len(days) == 3, table
    csv_path = Path(Lake(lake_url).day_url("sentinel_watchlist", LAST)) / "watchlist.csv"
    watchlist = pd.read_csv(csv_path)
    network = SampleNetwork()
    expected = {(network.host_ip(b.host), b.destination, b.port) for b in BEACONS}
    found = set(
        zip(watchlist.SourceIP, watchlist.DestinationIP, watchlist.DestinationPort, strict=True)
    )
    assert expected <= found


@pytest.mark.slow
def test_a_day_without_export_folders_names_what_it_looked_for(tmp_path):
    env = export_mode_env(tmp_path, tmp_path / "empty-export")
    command = [
        *MATERIALIZE,
        "commonsecuritylog_export",
        "--partition",
        FIRST.isoformat(),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "1 day(s) have no export folders" in output
    assert "empty-export/WorkspaceResourceId=/subscriptions/*/resourcegroups/*" in output
    assert "/y=2026/m=10/d=05/h=HH/m=MM/PT05M*.json or PT1H*.json" in output


def test_invalid_settings_stop_the_definitions_loading(tmp_path):
    env = {**os.environ, "BEACON_LOOKBACK_DAYS": "0", "BEACON_SOURCE": "ftp"}
    done = subprocess.run(
        [sys.executable, "-c", "import pipeline.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "BEACON_LOOKBACK_DAYS='0': must be between 1 and 90" in done.stderr
    assert "BEACON_SOURCE='ftp': must be one of sample, export, query" in done.stderr
