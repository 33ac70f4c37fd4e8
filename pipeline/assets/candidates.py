"""beaconing_candidates: pairs that call out on a timer over the lookback window, with reasons."""

import datetime as dt
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import dagster as dg

from pipeline import plots
from pipeline.assets.metadata import (
    asset_attributes,
    markdown_table,
    per_day_rows,
)
from pipeline.checks import low_coverage_days
from pipeline.detection import allowlist
from pipeline.partitions import lookback_window
from pipeline.resources.spark import SparkStep
from pipeline.settings import Settings
from pipeline.spark_jobs import beaconing_candidates
from pipeline.spark_jobs.beaconing_candidates import DetectionParams
from pipeline.spark_jobs.schemas import BEACONING_CANDIDATES

NAME = "beaconing_candidates"
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


def spec(settings: Settings) -> dg.AssetSpec:
    return dg.AssetSpec(
        NAME,
        **asset_attributes(
            group=GROUP,
            deps=[
                dg.AssetDep(
                    "pair_daily_stats", partition_mapping=lookback_window(settings.lookback_days)
                )
            ],
            kinds={"spark", "parquet"},
            columns=BEACONING_CANDIDATES,
            description=(
                f"Pairs whose connections over the last {settings.lookback_days} days look like a "
                "timer (jitter-tolerant timing, size, histogram and duration scores), to external "
                "destinations few internal hosts use; one row per reported pair with its reasons."
            ),
        ),
    )


def check_specs(settings: Settings) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            COVERAGE_CHECK,
            asset=NAME,
            blocking=True,
            description=(
                "Fails (and stops the day before the watchlist) when a day's lookback window "
                f"has less than {settings.min_window_coverage:.0%} of its days (from the "
                "start date, or the lake's first day when later) in the lake."
            ),
        )
    ]


@dataclass
class Plan:
    steps: list[SparkStep]
    days: list[dt.date]


def plan(settings: Settings, days: list[dt.date], log: Any, stack: ExitStack) -> Plan:
    log.info(
        f"stage beaconing_candidates: scoring {len(days)} day(s), each over a "
        f"{settings.lookback_days}-day window of pair_daily_stats"
    )
    entries, problems = allowlist.load(settings.lake_url)
    for problem in problems:
        log.warning(f"allowlist {allowlist.ALLOWLIST_PATH}: {problem}")
    log.info(f"allowlist: {len(entries)} entr(ies) from {allowlist.ALLOWLIST_PATH}")
    params = {
        "lake_url": settings.lake_url,
        "days": days,
        "params": detection_params(settings, entries),
    }
    return Plan([(beaconing_candidates.run, params)], days)


def result(settings: Settings, plan: Plan, reports: list[dict], log: Any) -> dg.MaterializeResult:
    (report,) = reports
    days = plan.days
    for day, facts in sorted(report.items()):
        if facts["window_days_missing"]:
            log.warning(
                f"{day}: window misses {len(facts['window_days_missing'])} day(s) of "
                f"pair_daily_stats: {', '.join(facts['window_days_missing'])}"
            )
    log.info(
        f"stage beaconing_candidates: {sum(f['rows'] for f in report.values())} candidate(s); "
        "drawing the plots"
    )
    frames = {d: settings.lake.read_day(beaconing_candidates.TABLE, str(d)) for d in days}
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
                markdown_table(top.to_dict("records"), TOP_COLUMNS) if not top.empty else "(none)"
            ),
            "path": dg.MetadataValue.path(settings.lake.table_url(beaconing_candidates.TABLE)),
            "plot": dg.MetadataValue.path(latest_png[0]),
            f"plot_{latest}": dg.MetadataValue.md(
                plots.markdown_image(latest_png[1], f"top candidates {latest}")
            ),
            "run_summary": dg.MetadataValue.md(run_summary(report, pictures)),
        },
        check_results=[
            dg.AssetCheckResult(
                asset_key=NAME,
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
