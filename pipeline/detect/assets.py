"""The detect stage's assets: pair_daily_stats (one compact summary per pair per day, so lookbacks
never re-read raw events) and beaconing_candidates (pairs that call out on a timer over the
lookback window, with reasons)."""

import datetime as dt
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

import dagster as dg

from pipeline.detect import allowlist, beaconing_candidates, pair_daily_stats, plots
from pipeline.detect.beaconing_candidates import DetectionParams
from pipeline.detect.checks import low_coverage_days
from pipeline.lake.schemas import BEACONING_CANDIDATES, PAIR_DAILY_STATS
from pipeline.metadata import (
    asset_attributes,
    markdown_table,
    per_day_rows,
)
from pipeline.partitions import lookback_window
from pipeline.resources.spark import SparkStep
from pipeline.settings import Settings

GROUP = "detect"
PAIR_STATS = "pair_daily_stats"
CANDIDATES = "beaconing_candidates"
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


@dataclass
class PairStatsPlan:
    steps: list[SparkStep]


@dataclass(frozen=True)
class PairDailyStats:
    """pair_daily_stats: one Spark step summarises the run's days of network_sessions."""

    name: ClassVar[str] = PAIR_STATS

    settings: Settings

    def spec(self) -> dg.AssetSpec:
        return dg.AssetSpec(
            PAIR_STATS,
            **asset_attributes(
                group=GROUP,
                deps=["network_sessions"],
                kinds={"spark", "parquet"},
                columns=PAIR_DAILY_STATS,
                description=(
                    "Per (source, destination, port, protocol) per day: counts, first/last seen, "
                    "and the connection times and byte sizes as compact arrays, enough to score "
                    "the pair over many days without reading raw events again."
                ),
            ),
        )

    def check_specs(self) -> list[dg.AssetCheckSpec]:
        return []

    def plan(self, days: list[dt.date], log: Any, stack: ExitStack) -> PairStatsPlan:
        settings = self.settings
        log.info(
            f"stage pair_daily_stats: summarising network_sessions of {len(days)} day(s) "
            f"({days[0]}…{days[-1]})"
        )
        return PairStatsPlan(
            [(pair_daily_stats.run, {"lake_url": settings.lake_url, "days": days})]
        )

    def result(self, plan: PairStatsPlan, reports: list[dict], log: Any) -> dg.MaterializeResult:
        settings = self.settings
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


@dataclass
class CandidatesPlan:
    steps: list[SparkStep]
    days: list[dt.date]


@dataclass(frozen=True)
class BeaconingCandidates:
    """beaconing_candidates: one Spark step scores each day over its lookback window; the
    result draws each day's picture and checks the window's coverage."""

    name: ClassVar[str] = CANDIDATES

    settings: Settings

    def spec(self) -> dg.AssetSpec:
        settings = self.settings
        return dg.AssetSpec(
            CANDIDATES,
            **asset_attributes(
                group=GROUP,
                deps=[
                    dg.AssetDep(
                        PAIR_STATS, partition_mapping=lookback_window(settings.lookback_days)
                    )
                ],
                kinds={"spark", "parquet"},
                columns=BEACONING_CANDIDATES,
                description=(
                    f"Pairs whose connections over the last {settings.lookback_days} days look "
                    "like a timer (jitter-tolerant timing, size, histogram and duration scores), "
                    "to external destinations few internal hosts use; one row per reported pair "
                    "with its reasons."
                ),
            ),
        )

    def check_specs(self) -> list[dg.AssetCheckSpec]:
        settings = self.settings
        return [
            dg.AssetCheckSpec(
                COVERAGE_CHECK,
                asset=CANDIDATES,
                blocking=True,
                description=(
                    "Fails (and stops the day before the watchlist) when a day's lookback window "
                    f"has less than {settings.min_window_coverage:.0%} of its days (from the "
                    "start date, or the lake's first day when later) in the lake."
                ),
            )
        ]

    def plan(self, days: list[dt.date], log: Any, stack: ExitStack) -> CandidatesPlan:
        settings = self.settings
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
        return CandidatesPlan([(beaconing_candidates.run, params)], days)

    def result(self, plan: CandidatesPlan, reports: list[dict], log: Any) -> dg.MaterializeResult:
        settings = self.settings
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
                    markdown_table(top.to_dict("records"), TOP_COLUMNS)
                    if not top.empty
                    else "(none)"
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
                    asset_key=CANDIDATES,
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
