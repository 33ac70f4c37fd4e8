"""sentinel_watchlist: the day's ranked beacons as the Sentinel watchlist analysts join in KQL."""

import dagster as dg

from pipeline.assets.candidates import read_day
from pipeline.assets.enriched import TABLE as ENRICHED_TABLE
from pipeline.assets.metadata import OWNERS, markdown_table
from pipeline.partitions import days_in_run
from pipeline.sentinel.watchlist_csv import COLUMNS, watchlist_csv
from pipeline.settings import Settings
from pipeline.spark_jobs import lake

GROUP = "publish"
TABLE = "sentinel_watchlist"
FILE_NAME = "watchlist.csv"


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=TABLE,
        group_name=GROUP,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[ENRICHED_TABLE],
        kinds={"azure", "csv"},
        owners=OWNERS,
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name=c, type="string") for c in COLUMNS]
            )
        },
        description=(
            "The Sentinel watchlist of the day's beacons. Without Sentinel configured it is "
            "written to the lake as the exact CSV Sentinel would receive "
            "(sentinel_watchlist/date=D/watchlist.csv)."
        ),
    )
    def sentinel_watchlist(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        per_day = []
        for day in days_in_run(context):
            enriched = read_day(settings.lake_url, ENRICHED_TABLE, day.isoformat())
            text = watchlist_csv(enriched)
            url = lake.write_pandas_day(text, settings.lake_url, TABLE, day, FILE_NAME)
            per_day.append(
                {
                    "date": day.isoformat(),
                    "items": len(enriched),
                    "bytes": len(text.encode()),
                    "csv": url,
                }
            )
            context.log.info(f"{day}: {len(enriched)} watchlist item(s) written to {url}")
        return dg.MaterializeResult(
            metadata={
                "sink": "local CSV (Sentinel not configured)",
                "items": sum(r["items"] for r in per_day),
                "per_day": dg.MetadataValue.md(markdown_table(per_day)),
                "latest_csv": dg.MetadataValue.path(per_day[-1]["csv"]),
            }
        )

    return sentinel_watchlist
