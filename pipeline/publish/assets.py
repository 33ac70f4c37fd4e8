"""sentinel_watchlist: the day's ranked beacons as the Sentinel watchlist analysts join in KQL."""

import dagster as dg

from pipeline.enrich.assets import TABLE as ENRICHED_TABLE
from pipeline.metadata import daily_asset, markdown_table
from pipeline.partitions import days_in_run
from pipeline.publish.incidents import IncidentStats, raise_incidents
from pipeline.publish.watchlist import (
    ITEM_COLUMNS,
    ArmWatchlistClient,
    PublishStats,
    WatchlistTarget,
    publish_day,
)
from pipeline.publish.watchlist_csv import COLUMNS, csv_text, watchlist_rows
from pipeline.settings import Settings

GROUP = "publish"
TABLE = "sentinel_watchlist"
FILE_NAME = "watchlist.csv"


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @daily_asset(
        TABLE,
        partitions,
        group=GROUP,
        deps=[ENRICHED_TABLE],
        kinds={"azure", "csv"},
        columns=dg.TableSchema(
            columns=[dg.TableColumn(name=c, type="string") for c in ITEM_COLUMNS]
        ),
        description=(
            "The Sentinel watchlist of reported beacons, one item per pair (PairKey), upserted "
            "over ARM when SENTINEL_* is set; items leave after BEACON_WATCHLIST_RETENTION_DAYS "
            "without a report. Each day's CSV is also written to the lake as the record of what "
            "was sent (sentinel_watchlist/date=D/watchlist.csv), the only sink without Sentinel."
        ),
    )
    def sentinel_watchlist(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        client = None
        if settings.sentinel_configured:
            client = ArmWatchlistClient(WatchlistTarget.from_settings(settings))
        per_day: list[dict] = []
        published: list[PublishStats] = []
        incidents: list[IncidentStats] = []
        try:
            if client is not None:
                client.check_identity()  # before any day: a lost login fails the run at once
            # Day by day in date order: in a range backfill the last day's values win.
            for day in days_in_run(context):
                rows = watchlist_rows(settings.lake.read_day(ENRICHED_TABLE, day.isoformat()))
                text = csv_text(rows, COLUMNS)
                if client is not None:
                    stats = publish_day(
                        client, rows, day, settings.watchlist_retention_days, context.log
                    )
                    published.append(stats)
                    if settings.incident_min_risk is not None:
                        incidents.append(
                            raise_incidents(
                                client, rows, day, settings.incident_min_risk, context.log
                            )
                        )
                # Written after a successful publication: the lake CSV records what was sent.
                url = settings.lake.write_day_file(TABLE, day, FILE_NAME, text)
                per_day.append(
                    {
                        "date": day.isoformat(),
                        "items": len(rows),
                        "bytes": len(text.encode()),
                        "csv": url,
                    }
                )
                context.log.info(f"{day}: {len(rows)} watchlist item(s) written to {url}")
        finally:
            if client is not None:
                client.close()
        metadata: dict = {
            "items": sum(r["items"] for r in per_day),
            "latest_csv": dg.MetadataValue.path(per_day[-1]["csv"]),
        }
        if client is None:
            metadata["sink"] = "local CSV (Sentinel not configured)"
            metadata["per_day"] = dg.MetadataValue.md(markdown_table(per_day))
            return dg.MaterializeResult(metadata=metadata)
        target = client.target
        metadata |= {
            "sink": "Sentinel watchlist (ARM) + lake CSV",
            "watchlist": dg.MetadataValue.url(target.url),
            "watchlist_alias": target.alias,
            "kql": dg.MetadataValue.md(f"`_GetWatchlist('{target.alias}')`"),
            "watchlist_created": any(s.created_watchlist for s in published),
            "items_upserted": sum(s.upserted for s in published),
            "items_unchanged": sum(s.unchanged for s in published),
            "items_kept_newer": sum(s.kept_newer for s in published),
            "items_deleted": sum(s.deleted + s.duplicates_removed for s in published),
            "requests": sum(s.requests for s in published),
            "throttled": sum(s.throttled for s in published),
            "per_day": dg.MetadataValue.md(markdown_table([s.as_row() for s in published])),
        }
        if settings.incident_min_risk is not None:
            metadata["incidents_raised"] = sum(i.created for i in incidents)
            metadata["incidents_already_raised"] = sum(i.existing for i in incidents)
        return dg.MaterializeResult(metadata=metadata)

    return sentinel_watchlist
