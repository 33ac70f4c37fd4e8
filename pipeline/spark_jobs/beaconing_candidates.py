"""The lookback window of `pair_daily_stats` → scored beaconing candidates per day.

For each target day D the window is D-N+1 … D (clipped at the first partition). Every daily
summary row is fanned out to the target days whose window holds it, so a range of days is scored
in one pass. Pairs are scored with `pipeline.detection.scoring` inside `mapInPandas` (on the
executors, never on the driver); context that separates C2 from benign pollers (prevalence
among internal hosts, first-seen age) is computed in Spark over all pairs of the window.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.detection.scoring import describe, score_pair
from pipeline.spark_jobs import lake
from pipeline.spark_jobs.networks import is_in_networks, is_internal
from pipeline.spark_jobs.pair_daily_stats import STROBE_CONNECTIONS_PER_DAY
from pipeline.spark_jobs.pair_daily_stats import TABLE as STATS_TABLE
from pipeline.spark_jobs.schemas import BEACONING_CANDIDATES, PAIR_DAILY_STATS, PAIR_KEY

TABLE = "beaconing_candidates"
SCORED = T.StructType(
    [f for f in BEACONING_CANDIDATES.fields if f.name != "periodic_sources_to_destination"]
)
MS_PER_DAY = 86_400_000
# Benign pollers (update, telemetry, AV, NTP) run the same timer on many hosts; C2 usually runs on
# one or two. A timer shared by this many internal hosts to one destination:port is a schedule,
# not an implant, unless the destination is new (then it may be a worm or a mass compromise).
SHARED_TIMER_MIN_HOSTS = 3
# A host counts towards a shared timer when its pair scores at least this (below the report
# threshold on purpose: jitter can push some hosts of a benign poller under it).
SHARED_TIMER_MIN_SCORE = 0.6
# New: first seen in the last week of the window, and not on the window's first day with data (a
# destination seen since the data began may be much older than the data).
NEW_DESTINATION_DAYS = 7
# The notebook's thresholds, for BEACON_PROFILE=notebook (REFERENCE §1).
NOTEBOOK_MIN_PERCENT_BEACON = 75.0
NOTEBOOK_MIN_CONNECTIONS = 100
NOTEBOOK_MAX_DEGREE = 25
# Target days scored per Spark pass in a range run (each holds its whole window).
TARGET_DAYS_PER_PASS = 5


@dataclass(frozen=True)
class DetectionParams:
    lookback_days: int
    first_day: dt.date
    internal_networks: tuple[str, ...]
    min_connections: int
    score_threshold: float
    profile: str = "default"  # default | notebook
    allowlist: tuple[tuple[str, str], ...] = ()  # (kind, value): kind is "cidr" or "domain"


def window_of(day: dt.date, params: DetectionParams) -> list[dt.date]:
    """The days of `day`'s lookback window, clipped at the first partition."""
    start = max(day - dt.timedelta(days=params.lookback_days - 1), params.first_day)
    return [start + dt.timedelta(days=i) for i in range((day - start).days + 1)]


def _score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    columns = [f.name for f in SCORED.fields]
    for batch in batches:
        rows = []
        for pair in batch.itertuples(index=False):
            if pair.is_strobe:
                rows.append(_strobe_row(pair))
                continue
            result = score_pair(
                np.asarray(pair.event_ms, dtype=np.float64) / 1000.0,
                np.asarray(pair.sent_bytes),
                np.asarray(pair.received_bytes),
                window_s=max(float(pair.observed_seconds), 3600.0),
            )
            if result is None:
                continue
            reasons = describe(
                result,
                days_seen=pair.days_seen,
                window_days=pair.window_days_present,
                first_seen_age_days=pair.first_seen_age_days,
                internal_sources_to_destination=pair.internal_sources_to_destination,
                internal_sources=pair.internal_sources,
            )
            rows.append(
                {
                    **_context(pair),
                    "kind": "beacon",
                    "score": result.score,
                    "median_interval_s": result.median_interval_s,
                    "interval_mad_s": result.interval_mad_s,
                    "timing_score": result.timing_score,
                    "size_score": result.size_score,
                    "histogram_score": result.histogram_score,
                    "duration_score": result.duration_score,
                    "percent_beacon": result.percent_beacon,
                    "hours_active_ratio": result.hours_active_ratio,
                    "interval_histogram": result.interval_histogram,
                    "reasons": reasons,
                }
            )
        frame = pd.DataFrame(rows, columns=columns)
        # Fields a row does not have (a strobe has no intervals) must reach Spark as null, not NaN.
        yield frame.astype(object).where(frame.notna(), None)


def _context(pair: Any) -> dict[str, Any]:
    return {
        name: getattr(pair, name)
        for name in (
            *PAIR_KEY,
            "connections",
            "days_seen",
            "first_seen",
            "last_seen",
            "first_seen_age_days",
            "destination_age_days",
            "new_destination",
            "internal_sources_to_destination",
            "internal_sources",
            "prevalence",
            "sent_bytes_total",
            "received_bytes_total",
            "device_vendor",
            "destination_hostname",
            "window_start",
            "window_days_present",
            "date",
        )
    }


def _strobe_row(pair: Any) -> dict[str, Any]:
    return {
        **_context(pair),
        "kind": "strobe",
        "score": 1.0,
        "reasons": (
            f"strobe: more than {STROBE_CONNECTIONS_PER_DAY:,} connections on a day "
            f"({pair.connections:,} in {pair.days_seen} days)"
        ),
    }


def _windowed_pairs(
    stats: DataFrame, targets: list[dt.date], params: DetectionParams, coverage: DataFrame
) -> DataFrame:
    """One row per (target day, pair) with the pair's events over the target's window."""
    target_strings = [d.isoformat() for d in targets]
    day = F.to_date("date")
    fanned = stats.withColumn(
        "target", F.explode(F.sequence(day, F.date_add(day, params.lookback_days - 1)))
    ).withColumn("target", F.date_format("target", "yyyy-MM-dd"))
    fanned = fanned.filter(F.col("target").isin(target_strings)).join(
        F.broadcast(coverage), "target"
    )
    offset_ms = F.datediff(day, F.to_date("window_start")).cast("long") * MS_PER_DAY
    src_internal = is_internal(F.col("SourceIP"), params.internal_networks)
    fanned = fanned.withColumn("src_internal", src_internal)

    destinations = fanned.groupBy("target", "DestinationIP").agg(
        F.countDistinct(F.when(F.col("src_internal"), F.col("SourceIP"))).alias(
            "internal_sources_to_destination"
        ),
        F.min("date").alias("destination_first_day"),
    )
    # The window's observed time: a capture of 50 minutes, or a network whose logs start
    # mid-window, must not make every pair look short-lived.
    population = fanned.groupBy("target").agg(
        F.countDistinct(F.when(F.col("src_internal"), F.col("SourceIP"))).alias("internal_sources"),
        (F.unix_seconds(F.max("last_seen")) - F.unix_seconds(F.min("first_seen"))).alias(
            "observed_seconds"
        ),
        F.min("date").alias("first_day_with_data"),
    )
    external = fanned.filter(
        ~is_internal(F.col("DestinationIP"), params.internal_networks)
        & ~allowlisted(params.allowlist)
    )
    pairs = external.groupBy("target", *PAIR_KEY).agg(
        F.sum("connections").alias("connections"),
        F.countDistinct("date").alias("days_seen"),
        F.min("first_seen").alias("first_seen"),
        F.max("last_seen").alias("last_seen"),
        F.sum("sent_bytes_total").alias("sent_bytes_total"),
        F.sum("received_bytes_total").alias("received_bytes_total"),
        F.max("is_strobe").alias("is_strobe"),
        F.flatten(
            F.collect_list(F.transform("event_ms", lambda ms: ms.cast("long") + offset_ms))
        ).alias("event_ms"),
        F.flatten(F.collect_list("sent_bytes")).alias("sent_bytes"),
        F.flatten(F.collect_list("received_bytes")).alias("received_bytes"),
        F.max("device_vendor").alias("device_vendor"),
        F.max("destination_hostname").alias("destination_hostname"),
        F.first("window_start").alias("window_start"),
        F.first("window_days_present").alias("window_days_present"),
    )
    pairs = pairs.filter((F.col("connections") >= params.min_connections) | F.col("is_strobe"))
    return (
        pairs.join(destinations, ["target", "DestinationIP"], "left")
        .join(population, "target", "left")
        .fillna(0, ["internal_sources_to_destination", "internal_sources"])
        .withColumn(
            "prevalence",
            F.when(
                F.col("internal_sources") > 0,
                F.col("internal_sources_to_destination") / F.col("internal_sources"),
            ).otherwise(F.lit(0.0)),
        )
        .withColumn(
            "first_seen_age_days",
            F.datediff(F.to_date("target"), F.to_date("first_seen")).cast("int"),
        )
        .withColumn(
            "destination_age_days",
            F.datediff(F.to_date("target"), F.to_date("destination_first_day")).cast("int"),
        )
        .withColumn(
            "new_destination",
            (F.col("destination_age_days") <= NEW_DESTINATION_DAYS)
            & (F.col("destination_first_day") > F.col("first_day_with_data")),
        )
        .withColumn("days_seen", F.col("days_seen").cast("int"))
        .withColumn("date", F.col("target"))
    )


def allowlisted(entries: tuple[tuple[str, str], ...]) -> Column:
    """Destinations an analyst has declared benign (by CIDR or host-name suffix)."""
    condition = F.lit(False)
    networks = tuple(value for kind, value in entries if kind == "cidr")
    if networks:
        condition = condition | is_in_networks(F.col("DestinationIP"), networks)
    for kind, value in entries:
        if kind == "domain":
            name = F.lower(F.coalesce(F.col("destination_hostname"), F.lit("")))
            suffix = value.lower().lstrip(".")
            condition = condition | (name == suffix) | name.endswith("." + suffix)
    return condition


def select_reported(scored: DataFrame, params: DetectionParams) -> DataFrame:
    """Keep strobes and the beacons worth an analyst's time, with the shared-timer context."""
    peers = Window.partitionBy("date", "DestinationIP", "DestinationPort", "Protocol")
    periodic = (
        (F.col("kind") == "beacon")
        & (F.col("score") >= SHARED_TIMER_MIN_SCORE)
        & is_internal(F.col("SourceIP"), params.internal_networks)
    )
    scored = scored.withColumn(
        "periodic_sources_to_destination", F.sum(periodic.cast("long")).over(peers)
    )
    shared = F.col("periodic_sources_to_destination") >= SHARED_TIMER_MIN_HOSTS
    new_destination = F.col("new_destination")
    if params.profile == "notebook":
        keep = (
            (F.col("percent_beacon") > NOTEBOOK_MIN_PERCENT_BEACON)
            & (F.col("connections") > NOTEBOOK_MIN_CONNECTIONS)
            & (F.col("internal_sources_to_destination") < NOTEBOOK_MAX_DEGREE)
        )
    else:
        keep = (F.col("score") >= params.score_threshold) & (~shared | new_destination)
    worm = F.concat(
        F.col("reasons"),
        F.lit("; possible worm: "),
        F.col("periodic_sources_to_destination").cast("string"),
        F.lit(" hosts share this timer to a destination first seen "),
        F.col("destination_age_days").cast("string"),
        F.lit(" days ago"),
    )
    return (
        scored.filter((F.col("kind") == "strobe") | keep)
        .withColumn("reasons", F.when(shared & new_destination, worm).otherwise(F.col("reasons")))
        .select(*[f.name for f in BEACONING_CANDIDATES.fields])
    )


def run(
    spark: SparkSession, *, lake_url: str, days: list[dt.date], params: DetectionParams
) -> dict[str, Any]:
    """Score the windows of `days`; returns per day the window coverage and candidate counts.

    A long range is scored a few target days per pass, so the fanned-out windows in memory stay
    those of a few days however long the backfill.
    """
    report: dict[str, dict[str, Any]] = {}
    for first in range(0, len(days), TARGET_DAYS_PER_PASS):
        chunk = days[first : first + TARGET_DAYS_PER_PASS]
        report.update(_score_days(spark, lake_url, chunk, params))
    return report


def _score_days(
    spark: SparkSession, lake_url: str, days: list[dt.date], params: DetectionParams
) -> dict[str, Any]:
    windows = {day: window_of(day, params) for day in days}
    needed = sorted({d for window in windows.values() for d in window})
    present = set(lake.days_present(lake_url, STATS_TABLE, needed))
    report: dict[str, dict[str, Any]] = {}
    for day, window in windows.items():
        have = [d for d in window if d in present]
        report[day.isoformat()] = {
            "window_start": window[0].isoformat(),
            "window_days": len(window),
            "window_days_present": len(have),
            "window_days_missing": [d.isoformat() for d in window if d not in present],
            "window_clipped_by_start_date": len(window) < params.lookback_days,
        }
    coverage = spark.createDataFrame(
        [(k, v["window_start"], v["window_days_present"]) for k, v in report.items()],
        "target string, window_start string, window_days_present int",
    )
    stats = lake.read_days(spark, lake_url, STATS_TABLE, sorted(present), PAIR_DAILY_STATS)
    pairs = _windowed_pairs(stats, days, params, coverage)
    scored = pairs.mapInPandas(_score_batches, SCORED)
    reported = select_reported(scored, params).cache()
    try:
        counts = {
            r["date"]: (r["candidates"], r["strobes"])
            for r in reported.groupBy("date")
            .agg(
                F.count(F.lit(1)).alias("candidates"),
                F.sum((F.col("kind") == "strobe").cast("int")).alias("strobes"),
            )
            .collect()
        }
        lake.replace_days(reported, lake_url, TABLE, days, {d: c[0] for d, c in counts.items()})
    finally:
        reported.unpersist()
    for day in days:
        key = day.isoformat()
        candidates, strobes = counts.get(key, (0, 0))
        report[key].update(rows=candidates, strobes=strobes)
        lake.write_manifest(lake_url, TABLE, day, report[key])
    return report
