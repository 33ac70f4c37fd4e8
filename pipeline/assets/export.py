"""commonsecuritylog_export: make sure each raw day exists in the Log Analytics export layout."""

from collections import Counter

import dagster as dg
from pyspark.sql import types as T

from pipeline import export_layout
from pipeline.assets.metadata import OWNERS, markdown_table, table_schema
from pipeline.partitions import days_in_run
from pipeline.sample.traffic import SampleNetwork, write_export_day
from pipeline.settings import Settings
from pipeline.spark_jobs.schemas import EXPORT_COLUMNS, EXPORT_RECORD

GROUP = "ingest"


class ExportDayMissingError(Exception):
    pass


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="commonsecuritylog_export",
        group_name=GROUP,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"azure", "json"},
        owners=OWNERS,
        # The CommonSecurityLog columns the pipeline reads from the JSON lines (all as strings).
        metadata={
            "dagster/column_schema": table_schema(
                T.StructType([EXPORT_RECORD[name] for name in EXPORT_COLUMNS])
            )
        },
        description=(
            "The raw CommonSecurityLog day in the Log Analytics data-export layout. Materializing "
            "it checks that the day's export folders exist (export mode) or generates the day "
            "(sample mode)."
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
        return dg.MaterializeResult(metadata=metadata)

    return commonsecuritylog_export
