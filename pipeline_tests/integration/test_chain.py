"""The whole chain through real Dagster (`materialize`) and real local Spark on sample data."""

import csv
import dataclasses
import datetime as dt
import io

import dagster as dg
import pandas as pd
import pytest

from pipeline.definitions import build_definitions
from pipeline.ingest.sample import BEACONS, SampleNetwork
from pipeline.lake import Lake
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.settings import Settings

LAST = dt.date(2026, 11, 20)
FIRST = LAST - dt.timedelta(days=3)
RANGE_TAGS = {
    "dagster/asset_partition_range_start": FIRST.isoformat(),
    "dagster/asset_partition_range_end": LAST.isoformat(),
}


def settings_for(tmp_path, **overrides) -> Settings:
    values = dict(
        lake_url=str(tmp_path / "lake"),
        export_url=str(tmp_path / "export"),
        start_date=FIRST - dt.timedelta(days=5),
        spark_master="local[2]",
    )
    values.update(overrides)
    return Settings(**values)


def materialize(settings: Settings, selection="*", tags=None, partition_key=None):
    defs = build_definitions(settings)
    assets = list(defs.assets)
    return dg.materialize(
        assets,
        selection=selection,
        resources={"spark": SparkJobRunner(spark_config=spark_config(settings))},
        tags=tags,
        partition_key=partition_key,
    )


def watchlist_rows(settings: Settings, day: dt.date) -> list[dict]:
    path = f"{Lake(settings.lake_url).day_url('sentinel_watchlist', day)}/watchlist.csv"
    with open(path, newline="") as handle:
        return list(csv.DictReader(io.StringIO(handle.read())))


@pytest.fixture(scope="module")
def chain(tmp_path_factory, spark):
    tmp_path = tmp_path_factory.mktemp("chain")
    # The window check blocks below its minimum: 4 days run of a 9-day clipped window is 0.44.
    settings = settings_for(tmp_path, min_window_coverage=0.1)
    result = materialize(settings, tags=RANGE_TAGS)
    return settings, result


def test_range_run_materializes_every_asset_for_every_day(chain):
    _, result = chain
    assert result.success
    materialized = {
        (e.asset_key.to_user_string(), e.partition)
        for e in result.get_asset_materialization_events()
        for e in [e.event_specific_data.materialization]
    }
    days = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(4)]
    for asset in ("network_sessions", "beaconing_candidates", "sentinel_watchlist"):
        assert {(asset, d) for d in days} <= materialized


def test_watchlist_reports_the_sample_beacons_and_nothing_prevalent(chain):
    settings, _ = chain
    rows = watchlist_rows(settings, LAST)
    network = SampleNetwork()
    expected = {(network.host_ip(b.host), b.destination, str(b.port)) for b in BEACONS}
    reported = {(r["SourceIP"], r["DestinationIP"], r["DestinationPort"]) for r in rows}
    assert expected <= reported
    # The benign pollers run the same timer on every host: none of them is reported.
    candidates = pd.read_parquet(Lake(settings.lake_url).day_url("beaconing_candidates", LAST))
    assert (candidates["periodic_sources_to_destination"] < 3).all()
    assert len(candidates) == len(rows)
    assert list(rows[0])[:3] == ["SourceIP", "DestinationIP", "DestinationPort"]
    assert [int(r["risk_rank"]) for r in rows] == list(range(1, len(rows) + 1))


def test_checks_pass_and_metadata_says_what_the_window_covered(chain):
    _, result = chain
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["quarantine_ratio_within_limit"] is True
    assert checks["has_rows"] is True
    assert checks["window_coverage"] is True
    assert checks["export_schema_unchanged"] is True
    candidates = next(
        m
        for m in result.asset_materializations_for_node("spark_stages")
        if m.asset_key.path[-1] == "beaconing_candidates"
    )
    coverage = candidates.metadata["window_coverage"].value
    # The start date is 5 days before the first day run: the 21-day window of LAST starts where
    # the lake's history does (FIRST), and all 4 of its days are there.
    assert f"| {LAST.isoformat()} | {FIRST.isoformat()} | 4 | [] |" in coverage


def test_rerunning_a_day_gives_identical_outputs(chain, tmp_path):
    settings, _ = chain
    tables = ("network_sessions", "pair_daily_stats", "beaconing_candidates", "enriched_beacons")
    before = {t: _frame(settings, t, LAST) for t in tables}
    csv_before = watchlist_rows(settings, LAST)
    result = materialize(settings, partition_key=LAST.isoformat())
    assert result.success
    for table in tables:
        pd.testing.assert_frame_equal(before[table], _frame(settings, table, LAST))
    assert watchlist_rows(settings, LAST) == csv_before


def test_each_asset_alone_for_one_day(chain, tmp_path):
    settings, _ = chain
    other = dataclasses.replace(settings, lake_url=str(tmp_path / "other-lake"))
    # The export is already there: only network_sessions, then only pair_daily_stats.
    assert materialize(other, "network_sessions", partition_key=LAST.isoformat()).success
    assert Lake(other.lake_url).read_manifest("network_sessions", LAST)["rows"] > 0
    assert Lake(other.lake_url).read_manifest("pair_daily_stats", LAST) is None
    assert materialize(other, "pair_daily_stats", partition_key=LAST.isoformat()).success
    assert Lake(other.lake_url).read_manifest("pair_daily_stats", LAST)["rows"] > 0


def test_pair_daily_stats_without_its_sessions_fails_clearly(tmp_path, spark):
    settings = settings_for(tmp_path)
    with pytest.raises(Exception, match="network_sessions is missing for 2026-11-20"):
        materialize(settings, "pair_daily_stats", partition_key=LAST.isoformat())


def _frame(settings: Settings, table: str, day: dt.date) -> pd.DataFrame:
    frame = pd.read_parquet(Lake(settings.lake_url).day_url(table, day))
    keys = [
        c for c in ("SourceIP", "DestinationIP", "DestinationPort", "TimeGenerated") if c in frame
    ]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)
