"""The ingest stage's assets: commonsecuritylog_export (each raw day in the Log Analytics export
layout) and network_sessions (the day's firewall records, typed and deduplicated, bad ones
quarantined)."""

import datetime as dt
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

import dagster as dg
from pyspark.sql import types as T

from pipeline.azure import storage
from pipeline.ingest import export_layout, network_sessions, query_export
from pipeline.ingest.checks import export_schema_drift
from pipeline.ingest.sample import SampleNetwork, write_export_day
from pipeline.ingest.sensors import export_fingerprint, record_fingerprints
from pipeline.lake.schemas import EXPORT_COLUMNS, EXPORT_RECORD, NETWORK_SESSIONS
from pipeline.metadata import (
    asset_attributes,
    daily_asset,
    markdown_table,
    per_day_rows,
)
from pipeline.partitions import days_in_run
from pipeline.resources.spark import SparkStep
from pipeline.settings import Settings

GROUP = "ingest"
EXPORT = "commonsecuritylog_export"
NAME = "network_sessions"
QUARANTINE_CHECK = "quarantine_ratio_within_limit"
ROWS_CHECK = "has_rows"
SCHEMA_CHECK = "export_schema_unchanged"
# A range run reads this many days per Spark pass (one step each, all in one submission): peak
# memory then stays that of a few days, however long the backfill.
DAYS_PER_PASS = 3


class ExportDayMissingError(Exception):
    pass


def build_export(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """commonsecuritylog_export: make sure each raw day exists in the export layout."""

    @daily_asset(
        EXPORT,
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


@dataclass
class SessionsPlan:
    """What the Spark steps of this stage read, and what its result needs afterwards."""

    steps: list[SparkStep]
    fingerprints: dict[dt.date, Any]
    late_blobs: int
    drift: dict


@dataclass(frozen=True)
class NetworkSessions:
    """network_sessions: the day's firewall records, typed and deduplicated, bad ones
    quarantined; one Spark step per pass of DAYS_PER_PASS days."""

    name: ClassVar[str] = NAME

    settings: Settings

    def spec(self) -> dg.AssetSpec:
        return dg.AssetSpec(
            NAME,
            **asset_attributes(
                group=GROUP,
                deps=[EXPORT],
                kinds={"spark", "parquet"},
                columns=NETWORK_SESSIONS,
                description=(
                    "Firewall connections of the day as lake parquet "
                    "(network_sessions/date=D/): typed, deduplicated, vendor-filtered; malformed "
                    "records go to quarantine/date=D/ with the reason."
                ),
            ),
        )

    def check_specs(self) -> list[dg.AssetCheckSpec]:
        settings = self.settings
        return [
            dg.AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=NAME,
                blocking=True,
                description=(
                    "Fails (and stops the day before the watchlist) when more than "
                    f"{settings.max_quarantine_ratio:.0%} of a day's records are quarantined."
                ),
            ),
            dg.AssetCheckSpec(
                ROWS_CHECK,
                asset=NAME,
                blocking=True,
                description="Fails (and stops the day before the watchlist) on a day with no rows.",
            ),
            dg.AssetCheckSpec(
                SCHEMA_CHECK,
                asset=NAME,
                blocking=True,
                description=(
                    "Fails (and stops the day before the watchlist) when the export's records "
                    "lack a column the pipeline needs or carry it with another JSON type "
                    "(sampled from each day's blobs); new columns are listed, not failed."
                ),
            ),
        ]

    def plan(self, days: list[dt.date], log: Any, stack: ExitStack) -> SessionsPlan:
        """List the export blobs of `days`; one Spark step per pass of DAYS_PER_PASS days."""
        settings = self.settings
        # What this run reads, for the late-export sensor. Taken before the listing: a blob that
        # lands in between is read but not fingerprinted, so it costs a re-run, never a miss.
        fingerprints = {
            d: export_fingerprint(settings.export_url, d, settings.workspace_resource_id)
            for d in days
        }
        per_day, late = export_layout.blobs_for_days(
            settings.export_url, days, settings.workspace_resource_id
        )
        empty = [d.isoformat() for d, blobs in per_day.items() if not blobs]
        if empty:
            raise FileNotFoundError(
                f"no export blobs for {', '.join(empty)} under {settings.export_url}: "
                "materialize commonsecuritylog_export for those days first"
            )
        drift = export_schema_drift({d.isoformat(): [b.url for b in per_day[d]] for d in days})
        megabytes = sum(b.size for d in days for b in per_day[d]) / 1e6
        passes = export_layout.chunks(days, DAYS_PER_PASS)
        log.info(
            f"stage network_sessions: {sum(len(per_day[d]) for d in days)} export blobs "
            f"({megabytes:.1f} MB) for {len(days)} day(s) in {len(passes)} pass(es), "
            f"{len(late)} blob(s) from the next day's first hours for late records"
        )
        # Local Spark has no hadoop-azure: a remote export is copied to a temporary local folder,
        # deleted when the run's Spark work ends. Synapse and clusters read abfss:// themselves.
        stage = settings.spark_mode == "local" and storage.is_remote(settings.export_url)
        steps: list[SparkStep] = []
        for chunk in passes:
            urls = export_layout.urls_for_chunk(chunk, per_day, late)
            staged = stack.enter_context(storage.local_copies(urls if stage else []))
            params = {
                "lake_url": settings.lake_url,
                "days": chunk,
                "blob_urls": staged if stage else urls,
                "device_vendors": settings.device_vendors,
                "source_prefixes": storage.staging_prefixes(urls, staged) if stage else None,
            }
            steps.append((network_sessions.run, params))
        if stage:
            log.info(
                "stage network_sessions: copied the export blobs to a local folder for local Spark"
            )
        return SessionsPlan(steps, fingerprints, late_blobs=len(late), drift=drift)

    def result(self, plan: SessionsPlan, reports: list[dict], log: Any) -> dg.MaterializeResult:
        settings = self.settings
        report: dict = {}
        for chunk_report in reports:
            report.update(chunk_report)
        record_fingerprints(settings.lake_url, plan.fingerprints)
        log.info(
            f"stage network_sessions: wrote {sum(r['rows'] for r in report.values())} rows, "
            f"quarantined {sum(r['quarantined'] for r in report.values())}"
        )
        return _sessions_result(settings, report, late_blobs=plan.late_blobs, drift=plan.drift)


def _sessions_result(
    settings: Settings, report: dict, late_blobs: int, drift: dict
) -> dg.MaterializeResult:
    rows = sum(r["rows"] for r in report.values())
    quarantined = sum(r["quarantined"] for r in report.values())
    reasons: Counter[str] = Counter()
    for facts in report.values():
        reasons.update(facts["quarantine_reasons"])
    over = {
        d: f["quarantine_ratio"]
        for d, f in report.items()
        if f["quarantine_ratio"] > settings.max_quarantine_ratio
    }
    empty_days = [d for d, f in report.items() if f["rows"] == 0]
    table = per_day_rows(
        report,
        [
            "lines",
            "rows",
            "duplicates_dropped",
            "late_records",
            "vendor_filtered",
            "blank_lines",
            "quarantined",
            "quarantine_ratio",
        ],
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "rows": rows,
            "quarantined": quarantined,
            "quarantine_reasons": dict(reasons),
            "duplicates_dropped": sum(r["duplicates_dropped"] for r in report.values()),
            "late_records": sum(r["late_records"] for r in report.values()),
            "late_window_blobs": late_blobs,
            # Every line read is accounted for: lines = rows + duplicates_dropped + quarantined
            # + vendor_filtered + blank_lines (network_sessions' module docstring).
            "lines": sum(r["lines"] for r in report.values()),
            "blank_lines": sum(r["blank_lines"] for r in report.values()),
            "vendor_filtered": sum(r["vendor_filtered"] for r in report.values()),
            "unknown_columns": dg.MetadataValue.json(
                {d: f["unknown_columns"] for d, f in report.items() if f["unknown_columns"]}
            ),
            "per_day": dg.MetadataValue.md(markdown_table(table)),
            "path": dg.MetadataValue.path(settings.lake.table_url(network_sessions.TABLE)),
            "quarantine_path": dg.MetadataValue.path(
                settings.lake.table_url(network_sessions.QUARANTINE_TABLE)
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                asset_key=NAME,
                check_name=QUARANTINE_CHECK,
                passed=not over,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "limit": settings.max_quarantine_ratio,
                    "days_over_limit": dg.MetadataValue.json(over),
                    "worst_ratio": max(
                        (f["quarantine_ratio"] for f in report.values()), default=0.0
                    ),
                },
            ),
            dg.AssetCheckResult(
                asset_key=NAME,
                check_name=ROWS_CHECK,
                passed=not empty_days,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"days_without_rows": dg.MetadataValue.json(empty_days)},
            ),
            dg.AssetCheckResult(
                asset_key=NAME,
                check_name=SCHEMA_CHECK,
                passed=not drift["drifted_days"],
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "drifted_days": dg.MetadataValue.json(drift["drifted_days"]),
                    "new_columns": dg.MetadataValue.json(drift["new_columns"]),
                    "records_sampled": drift["records_sampled"],
                },
            ),
        ],
    )
