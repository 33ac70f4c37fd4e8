"""commonsecuritylog_export: make sure each raw day exists in the Log Analytics export layout."""

from collections import Counter

import dagster as dg
from pyspark.sql import types as T

from pipeline import export_layout, query_export
from pipeline.assets.metadata import (
    daily_asset,
    markdown_table,
)
from pipeline.partitions import days_in_run
from pipeline.sample.traffic import SampleNetwork, write_export_day
from pipeline.settings import Settings
from pipeline.spark_jobs.schemas import EXPORT_COLUMNS, EXPORT_RECORD

GROUP = "ingest"


class ExportDayMissingError(Exception):
    pass


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @daily_asset(
        "commonsecuritylog_export",
        partitions,
        group=GROUP,
        kinds={"azure", "json"},
        # The CommonSecurityLog columns the pipeline reads from the JSON lines (all as strings).
        columns=T.StructType([EXPORT_RECORD[name] for name in EXPORT_COLUMNS]),
        description=(
            "The raw CommonSecurityLog day in the Log Analytics data-export layout. Materializing "
            "it checks that the day's export folders exist (export mode), pulls the day from the "
            "workspace with the query API (query mode) or generates the day (sample mode)."
        ),
    )
    def commonsecuritylog_export(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        days = days_in_run(context)
        rows = []
        if settings.source == "sample":
            network = SampleNetwork()
            for day in days:
                written = write_export_day(settings.export_url, day, network)
                rows.append({"date": day.isoformat(), **written, "layout": "PT05M"})
                context.log.info(f"generated sample export for {day}: {written}")
        elif settings.source == "query":
            # Day by day: each lands whole or not at all; a failure stops the run there.
            for day in days:
                pulled = query_export.pull_day(settings, day, context.log)
                rows.append({**pulled.as_row(), "layout": "PT05M"})
        else:
            missing = []
            for day in days:
                blobs = export_layout.list_day_blobs(
                    settings.export_url, day, settings.workspace_resource_id
                )
                if not blobs:
                    missing.append(
                        export_layout.describe_expected(
                            settings.export_url, day, settings.workspace_resource_id
                        )
                    )
                    continue
                layouts = Counter(export_layout.layout_of(b.url) for b in blobs)
                rows.append(
                    {
                        "date": day.isoformat(),
                        "files": len(blobs),
                        "bytes": sum(b.size for b in blobs),
                        "layout": ", ".join(sorted(layouts)),
                    }
                )
            if missing:
                raise ExportDayMissingError(
                    f"{len(missing)} day(s) have no export folders. Looked for:\n  "
                    + "\n  ".join(missing)
                )
        metadata: dict[str, dg.RawMetadataValue] = {
            "source": settings.source,
            "export_url": settings.export_url,
            "days": len(days),
            "files": sum(r["files"] for r in rows),
            "bytes": sum(r["bytes"] for r in rows),
            "per_day": dg.MetadataValue.md(markdown_table(rows)),
        }
        if settings.source == "sample":
            metadata["records"] = sum(r["records"] for r in rows)
        if settings.source == "query":
            metadata.update(_query_metadata(settings, rows))
        return dg.MaterializeResult(metadata=metadata)

    return commonsecuritylog_export


def _query_metadata(settings: Settings, rows: list[dict]) -> dict[str, int | str]:
    """What pulling from Log Analytics took: rows, slices, retries and halvings."""
    return {
        "dagster/row_count": sum(r["rows"] for r in rows),
        "records": sum(r["rows"] for r in rows),
        "log_analytics_workspace_id": settings.log_analytics_workspace_id or "",
        "workspace_folder": query_export.export_workspace_resource_id(settings),
        "slices": sum(r["slices"] for r in rows),
        "halvings": sum(r["halvings"] for r in rows),
        "retries": sum(r["throttled"] + r["server_errors"] for r in rows),
        "throttled": sum(r["throttled"] for r in rows),
        "server_errors": sum(r["server_errors"] for r in rows),
        "queries": sum(r["queries"] for r in rows),
    }
