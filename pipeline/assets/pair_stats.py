"""pair_daily_stats: one compact summary per pair per day, so lookbacks never re-read raw events."""

import time

import dagster as dg

from pipeline.assets.metadata import OWNERS, markdown_table, per_day_rows, table_schema
from pipeline.partitions import days_in_run
from pipeline.resources.spark import SparkJobRunner
from pipeline.settings import Settings
from pipeline.spark_jobs import lake, pair_daily_stats
from pipeline.spark_jobs.schemas import PAIR_DAILY_STATS

GROUP = "detect"


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="pair_daily_stats",
        group_name=GROUP,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=["network_sessions"],
        kinds={"spark", "parquet"},
        owners=OWNERS,
        metadata={"dagster/column_schema": table_schema(PAIR_DAILY_STATS)},
        description=(
            "Per (source, destination, port, protocol) per day: counts, first/last seen, and the "
            "connection times and byte sizes as compact arrays, enough to score the pair over "
            "many days without reading raw events again."
        ),
    )
    def pair_daily_stats_asset(
        context: dg.AssetExecutionContext, spark: SparkJobRunner
    ) -> dg.MaterializeResult:
        days = days_in_run(context)
        context.log.info(
            f"stage pair_daily_stats: summarising network_sessions of {len(days)} day(s) "
            f"({days[0]}…{days[-1]})"
        )
        started = time.monotonic()
        report = spark.run(pair_daily_stats.run, lake_url=settings.lake_url, days=days)
        rows = sum(r["rows"] for r in report.values())
        context.log.info(
            f"stage pair_daily_stats: wrote {rows} pair-day rows "
            f"in {time.monotonic() - started:.0f} s"
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "pairs": rows,
                "strobes": sum(r["strobes"] for r in report.values()),
                "per_day": dg.MetadataValue.md(
                    markdown_table(per_day_rows(report, ["rows", "strobes"]))
                ),
                "path": dg.MetadataValue.path(
                    lake.table_url(settings.lake_url, pair_daily_stats.TABLE)
                ),
            }
        )

    return pair_daily_stats_asset
