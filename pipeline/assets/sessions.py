"""network_sessions: the day's firewall records, typed and deduplicated, bad ones quarantined."""

import datetime as dt
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import dagster as dg

from pipeline import export_layout, storage
from pipeline.assets.metadata import (
    asset_attributes,
    markdown_table,
    per_day_rows,
)
from pipeline.checks import export_schema_drift
from pipeline.resources.spark import SparkStep
from pipeline.sensors import export_fingerprint, record_fingerprints
from pipeline.settings import Settings
from pipeline.spark_jobs import network_sessions
from pipeline.spark_jobs.schemas import NETWORK_SESSIONS

NAME = "network_sessions"
GROUP = "ingest"
QUARANTINE_CHECK = "quarantine_ratio_within_limit"
ROWS_CHECK = "has_rows"
SCHEMA_CHECK = "export_schema_unchanged"
# A range run reads this many days per Spark pass (one step each, all in one submission): peak
# memory then stays that of a few days, however long the backfill.
DAYS_PER_PASS = 3


def spec(settings: Settings) -> dg.AssetSpec:
    return dg.AssetSpec(
        NAME,
        **asset_attributes(
            group=GROUP,
            deps=["commonsecuritylog_export"],
            kinds={"spark", "parquet"},
            columns=NETWORK_SESSIONS,
            description=(
                "Firewall connections of the day as lake parquet (network_sessions/date=D/): "
                "typed, deduplicated, vendor-filtered; malformed records go to quarantine/date=D/ "
                "with the reason."
            ),
        ),
    )


def check_specs(settings: Settings) -> list[dg.AssetCheckSpec]:
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


@dataclass
class Plan:
    """What the Spark steps of this stage read, and what its result needs afterwards."""

    steps: list[SparkStep]
    fingerprints: dict[dt.date, Any]
    late_blobs: int
    drift: dict


def plan(settings: Settings, days: list[dt.date], log: Any, stack: ExitStack) -> Plan:
    """List the export blobs of `days` and make one Spark step per pass of DAYS_PER_PASS days."""
    # What this run reads, for the late-export sensor. Taken before the listing: a blob that
    # lands in between is read but not fingerprinted, so it costs a re-run, never a miss.
    fingerprints = {
        d: export_fingerprint(settings.export_url, d, settings.workspace_resource_id) for d in days
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
    return Plan(steps, fingerprints, late_blobs=len(late), drift=drift)


def result(settings: Settings, plan: Plan, reports: list[dict], log: Any) -> dg.MaterializeResult:
    report: dict = {}
    for chunk_report in reports:
        report.update(chunk_report)
    record_fingerprints(settings.lake_url, plan.fingerprints)
    log.info(
        f"stage network_sessions: wrote {sum(r['rows'] for r in report.values())} rows, "
        f"quarantined {sum(r['quarantined'] for r in report.values())}"
    )
    return _result(settings, report, late_blobs=plan.late_blobs, drift=plan.drift)


def _result(settings: Settings, report: dict, late_blobs: int, drift: dict) -> dg.MaterializeResult:
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
