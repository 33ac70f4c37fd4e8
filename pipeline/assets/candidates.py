"""beaconing_candidates: pairs that call out on a timer over the lookback window, with reasons."""

import datetime as dt
import time

import dagster as dg
import pandas as pd

from pipeline import plots
from pipeline.assets.metadata import OWNERS, markdown_table, per_day_rows, table_schema
from pipeline.checks import low_coverage_days
from pipeline.detection import allowlist
from pipeline.partitions import days_in_run, lookback_window
from pipeline.resources.spark import SparkJobRunner
from pipeline.settings import Settings
from pipeline.spark_jobs import beaconing_candidates, lake
from pipeline.spark_jobs.beaconing_candidates import DetectionParams
from pipeline.spark_jobs.schemas import BEACONING_CANDIDATES

GROUP = "detect"
COVERAGE_CHECK = "window_coverage"
TOP_COLUMNS = [
    "SourceIP",
    "DestinationIP",
    "DestinationPort",
    "Protocol",
    "kind",
    "score",
    "connections",
    "median_interval_s",
    "prevalence",
    "reasons",
]


def detection_params(
    settings: Settings, allowlist_entries: tuple[tuple[str, str], ...] = ()
) -> DetectionParams:
    return DetectionParams(
        lookback_days=settings.lookback_days,
        first_day=settings.start_date,
        internal_networks=settings.internal_networks,
        min_connections=settings.min_connections,
        score_threshold=settings.score_threshold,
        profile=settings.profile,
        allowlist=allowlist_entries,
    )


def read_day(lake_url: str, table: str, day: str) -> pd.DataFrame:
    """A small per-day table (candidates, enriched) read on the driver with pandas."""
    date = dt.date.fromisoformat(day)
    manifest = lake.read_manifest(lake_url, table, date)
    if manifest is None or manifest.get("rows", 0) == 0:
        return pd.DataFrame()
    # The day lives in the folder name (date=D), not in the files: put it back as a column.
    return pd.read_parquet(lake.day_url(lake_url, table, date)).assign(date=day)


def run_summary(report: dict[str, dict], pictures: dict[dt.date, tuple[str, bytes]]) -> str:
    """One line per day: what was scored, what was reported, where its picture is."""
    rows = [
        {
            "date": day,
            "window_days_present": facts["window_days_present"],
            "window_days": facts.get("window_days"),
            "candidates": facts["rows"],
            "strobes": facts["strobes"],
            "plot": pictures[dt.date.fromisoformat(day)][0],
        }
        for day, facts in sorted(report.items())
    ]
    total = sum(r["candidates"] for r in rows)
    return f"{len(rows)} day(s), {total} candidate(s)\n\n" + markdown_table(rows)


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="beaconing_candidates",
        group_name=GROUP,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[
            dg.AssetDep(
                "pair_daily_stats", partition_mapping=lookback_window(settings.lookback_days)
            )
        ],
        kinds={"spark", "parquet"},
        owners=OWNERS,
        metadata={"dagster/column_schema": table_schema(BEACONING_CANDIDATES)},
        check_specs=[
            dg.AssetCheckSpec(
                COVERAGE_CHECK,
                asset="beaconing_candidates",
                blocking=True,
                description=(
                    "Fails (and stops the day before the watchlist) when a day's lookback window "
                    f"has less than {settings.min_window_coverage:.0%} of its days (from the "
                    "start date, or the lake's first day when later) in the lake."
                ),
            )
        ],
        description=(
            f"Pairs whose connections over the last {settings.lookback_days} days look like a "
            "timer (jitter-tolerant timing, size, histogram and duration scores), to external "
            "destinations few internal hosts use; one row per reported pair with its reasons."
        ),
    )
    def beaconing_candidates_asset(
        context: dg.AssetExecutionContext, spark: SparkJobRunner
    ) -> dg.MaterializeResult:
        days = days_in_run(context)
        context.log.info(
            f"stage beaconing_candidates: scoring {len(days)} day(s), each over a "
            f"{settings.lookback_days}-day window of pair_daily_stats"
        )
        started = time.monotonic()
        entries, problems = allowlist.load(settings.lake_url)
        for problem in problems:
            context.log.warning(f"allowlist {allowlist.ALLOWLIST_PATH}: {problem}")
        context.log.info(f"allowlist: {len(entries)} entr(ies) from {allowlist.ALLOWLIST_PATH}")
        report = spark.run(
            beaconing_candidates.run,
            lake_url=settings.lake_url,
            days=days,
            params=detection_params(settings, entries),
        )
        for day, facts in sorted(report.items()):
            if facts["window_days_missing"]:
                context.log.warning(
                    f"{day}: window misses {len(facts['window_days_missing'])} day(s) of "
                    f"pair_daily_stats: {', '.join(facts['window_days_missing'])}"
                )
        context.log.info(
            f"stage beaconing_candidates: {sum(f['rows'] for f in report.values())} candidate(s) "
            f"in {time.monotonic() - started:.0f} s; drawing the plots"
        )
        frames = {d: read_day(settings.lake_url, beaconing_candidates.TABLE, str(d)) for d in days}
        pictures = {d: plots.plot_day(settings.lake_url, d, frames[d]) for d in days}
        latest = max(report)
        top = frames[dt.date.fromisoformat(latest)]
        if not top.empty:
            top = top.sort_values("score", ascending=False).head(20)
        low = low_coverage_days(report, settings.min_window_coverage)
        latest_png = pictures[dt.date.fromisoformat(latest)]
        rows = sum(f["rows"] for f in report.values())
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "candidates": rows,
                "strobes": sum(f["strobes"] for f in report.values()),
                "lookback_days": settings.lookback_days,
                "window_coverage": dg.MetadataValue.md(
                    markdown_table(
                        per_day_rows(
                            report,
                            ["window_start", "window_days_present", "window_days_missing", "rows"],
                        )
                    )
                ),
                f"top_candidates_{latest}": dg.MetadataValue.md(
                    markdown_table(top.to_dict("records"), TOP_COLUMNS)
                    if not top.empty
                    else "(none)"
                ),
                "path": dg.MetadataValue.path(
                    lake.table_url(settings.lake_url, beaconing_candidates.TABLE)
                ),
                "plot": dg.MetadataValue.path(latest_png[0]),
                f"plot_{latest}": dg.MetadataValue.md(
                    plots.markdown_image(latest_png[1], f"top candidates {latest}")
                ),
                "run_summary": dg.MetadataValue.md(run_summary(report, pictures)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=COVERAGE_CHECK,
                    passed=not low,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        "minimum": settings.min_window_coverage,
                        "days_below_minimum": dg.MetadataValue.json(low),
                    },
                )
            ],
        )

    return beaconing_candidates_asset
