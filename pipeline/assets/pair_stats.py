"""pair_daily_stats: one compact summary per pair per day, so lookbacks never re-read raw events."""

import datetime as dt
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import dagster as dg

from pipeline.assets.metadata import (
    asset_attributes,
    markdown_table,
    per_day_rows,
)
from pipeline.resources.spark import SparkStep
from pipeline.settings import Settings
from pipeline.spark_jobs import pair_daily_stats
from pipeline.spark_jobs.schemas import PAIR_DAILY_STATS

NAME = "pair_daily_stats"
GROUP = "detect"


def spec(settings: Settings) -> dg.AssetSpec:
    return dg.AssetSpec(
        NAME,
        **asset_attributes(
            group=GROUP,
            deps=["network_sessions"],
            kinds={"spark", "parquet"},
            columns=PAIR_DAILY_STATS,
            description=(
                "Per (source, destination, port, protocol) per day: counts, first/last seen, and "
                "the connection times and byte sizes as compact arrays, enough to score the pair "
                "over many days without reading raw events again."
            ),
        ),
    )


def check_specs(settings: Settings) -> list[dg.AssetCheckSpec]:
    return []


@dataclass
class Plan:
    steps: list[SparkStep]


def plan(settings: Settings, days: list[dt.date], log: Any, stack: ExitStack) -> Plan:
    log.info(
        f"stage pair_daily_stats: summarising network_sessions of {len(days)} day(s) "
        f"({days[0]}…{days[-1]})"
    )
    return Plan([(pair_daily_stats.run, {"lake_url": settings.lake_url, "days": days})])


def result(settings: Settings, plan: Plan, reports: list[dict], log: Any) -> dg.MaterializeResult:
    (report,) = reports
    rows = sum(r["rows"] for r in report.values())
    log.info(f"stage pair_daily_stats: wrote {rows} pair-day rows")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "pairs": rows,
            "strobes": sum(r["strobes"] for r in report.values()),
            "per_day": dg.MetadataValue.md(
                markdown_table(per_day_rows(report, ["rows", "strobes"]))
            ),
            "path": dg.MetadataValue.path(settings.lake.table_url(pair_daily_stats.TABLE)),
        }
    )
