"""A day that fails a blocking check stops before the watchlist (real Dagster, local Spark)."""

import dataclasses
import datetime as dt
from pathlib import Path

import dagster as dg

from pipeline.definitions import build_definitions
from pipeline.lake import Lake
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.settings import Settings

DAY = dt.date(2026, 11, 20)


def test_a_day_with_a_thin_window_never_reaches_the_watchlist(tmp_path, spark):
    # History starts five days before DAY, then nothing until DAY: its window has 2 of 6 days.
    first = DAY - dt.timedelta(days=5)
    settings = Settings(
        lake_url=str(tmp_path / "lake"),
        export_url=str(tmp_path / "export"),
        start_date=first - dt.timedelta(days=30),
        spark_master="local[2]",
    )
    defs = build_definitions(settings)
    resources = {"spark": SparkJobRunner(spark_config=spark_config(settings))}
    # The lake's first day is a whole window: the days before it are not missing history.
    assert dg.materialize(list(defs.assets), resources=resources, partition_key=first.isoformat())
    result = dg.materialize(
        list(defs.assets),
        resources=resources,
        partition_key=DAY.isoformat(),
        raise_on_error=False,
    )
    assert not result.success
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert checks["has_rows"].passed
    assert checks["export_schema_unchanged"].passed
    coverage = checks["window_coverage"]
    assert not coverage.passed
    assert coverage.severity == dg.AssetCheckSeverity.ERROR
    assert coverage.metadata["days_below_minimum"].value == {DAY.isoformat(): 0.333}
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert "beaconing_candidates" in materialized
    assert not {"enriched_beacons", "sentinel_watchlist"} & materialized
    assert Lake(settings.lake_url).read_manifest("enriched_beacons", DAY) is None
    watchlist = Path(Lake(settings.lake_url).day_url("sentinel_watchlist", DAY)) / "watchlist.csv"
    assert not watchlist.exists()

    # With a lower minimum the same day goes through to the watchlist.
    lower = dataclasses.replace(settings, min_window_coverage=0.3)
    again = dg.materialize(
        list(build_definitions(lower).assets),
        selection=["beaconing_candidates", "enriched_beacons", "sentinel_watchlist"],
        resources={"spark": SparkJobRunner(spark_config=spark_config(lower))},
        partition_key=DAY.isoformat(),
    )
    assert again.success
    assert Lake(settings.lake_url).read_manifest("enriched_beacons", DAY) is not None
    assert watchlist.exists()
