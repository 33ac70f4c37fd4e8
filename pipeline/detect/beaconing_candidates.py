"""The lookback window of `pair_daily_stats` → scored beaconing candidates per day.

For each target day D the window is D-N+1 … D (clipped at the first partition). Every daily
summary row is fanned out to the target days whose window holds it, so a range of days is scored
in one pass. Pairs are scored a batch at a time (`pipeline.detect.batch_scoring`) inside
`mapInPandas` (on the executors, never on the driver); context that separates C2 from benign
pollers (prevalence among internal hosts, first-seen age) is computed in Spark over all pairs of
the window.
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

from pipeline.detect.batch_scoring import score_pairs
from pipeline.detect.networks import is_in_networks, is_internal
from pipeline.detect.pair_daily_stats import STROBE_CONNECTIONS_PER_DAY
from pipeline.detect.pair_daily_stats import TABLE as STATS_TABLE
from pipeline.detect.scoring import describe, human_interval
from pipeline.lake import Lake, window_days
from pipeline.lake import spark as lake_spark
from pipeline.lake.schemas import BEACONING_CANDIDATES, PAIR_DAILY_STATS, PAIR_KEY

TABLE = "beaconing_candidates"
SCORED = T.StructType(
    [f for f in BEACONING_CANDIDATES.fields if f.name != "periodic_sources_to_destination"]
)
MS_PER_DAY = 86_400_000
# Benign pollers (update, telemetry, AV, NTP) run the same timer on a good share of the hosts;
# C2 runs on one or a handful. A timer shared by this many internal hosts, and by this share of
# them, to one destination:port is a schedule, not an implant, unless the destination is new
# (then it may be a worm or a mass compromise). Fewer hosts calling one destination on a timer
# is how a compromise spreads: they are reported, with the count.
SHARED_TIMER_MIN_HOSTS = 3
SHARED_TIMER_MIN_SHARE = 0.1
# A host counts towards a shared timer when its pair scores at least this (below the report
# threshold on purpose: jitter can push some hosts of a benign poller under it).
SHARED_TIMER_MIN_SCORE = 0.6
# New: first seen in the last week of the window, and not on the window's first day with data (a
# destination seen since the data began may be much older than the data).
NEW_DESTINATION_DAYS = 7
# One session open for hours is a kind of its own (RITA's long connections): its score is the
# band its longest session reaches, as RITA bands them (1, 4, 8, 12 hours).
LONG_CONNECTION_BANDS_S = ((12 * 3600, 1.0), (8 * 3600, 0.9), (4 * 3600, 0.8), (3600, 0.7))
LONG_CONNECTION_MIN_S = LONG_CONNECTION_BANDS_S[-1][0]
# The notebook's thresholds, for BEACON_PROFILE=notebook (REFERENCE §1).
NOTEBOOK_MIN_PERCENT_BEACON = 75.0
NOTEBOOK_MIN_CONNECTIONS = 100
NOTEBOOK_MAX_DEGREE = 25
# Columns a candidate carries from the window's summary of its pair, and those of its score.
CONTEXT = (
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
    "destination_ips",
    "longest_connection_s",
    "window_start",
    "window_days_present",
    "date",
)
SCORE_COLUMNS = (
    "score",
    "median_interval_s",
    "interval_mad_s",
    "timing_score",
    "size_score",
    "histogram_score",
    "duration_score",
    "percent_beacon",
    "hours_active_ratio",
    "intervals",
    "beyond_chance",
)
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


def window_of(
    day: dt.date, params: DetectionParams, history_start: dt.date | None = None
) -> list[dt.date]:
    """The days of `day`'s lookback window, clipped where history starts: the first partition,
    or the lake's first day of pair_daily_stats when that is later.

    Days before the lake's first day were never ingested (a new deployment, or a demo of the
    last few days under an early start date): they are not missing history. A hole after it is.
    """
    first = params.first_day
    if history_start is not None:
        first = min(max(first, history_start), day)
    return window_days(day, params.lookback_days, first)


def _score_batches(min_connections: int) -> Any:
    """The `mapInPandas` function: strobe, long-connection and beacon rows of each batch."""
    columns = [f.name for f in SCORED.fields]

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            strobe = batch["is_strobe"].to_numpy(dtype=bool)
            longest = batch["longest_connection_s"].astype("float64").fillna(0).to_numpy()
            long = ~strobe & (longest >= LONG_CONNECTION_MIN_S)
            beacon = ~strobe & (batch["connections"].to_numpy() >= min_connections)
            strobes = pd.DataFrame(
                [_strobe_row(pair) for pair in batch[strobe].itertuples(index=False)],
                columns=columns,
            )
            long_rows = pd.DataFrame(
                [_long_connection_row(pair) for pair in batch[long].itertuples(index=False)],
                columns=columns,
            )
            frames = (strobes, long_rows, _beacon_rows(batch[beacon]))
            yield from (_nulls_for_spark(f) for f in frames if len(f))

    return score


def _beacon_rows(pairs: pd.DataFrame) -> pd.DataFrame:
    """Score every pair of the batch at once; the rows of those with enough distinct times."""
    columns = [f.name for f in SCORED.fields]
    if pairs.empty:
        return pd.DataFrame(columns=columns)

    def flat(column: str) -> np.ndarray:
        return np.concatenate(pairs[column].to_numpy()).astype(np.int64)

    lengths = pairs["event_ms"].map(len).to_numpy()
    scores = score_pairs(
        np.r_[0, np.cumsum(lengths)],
        flat("event_ms"),
        flat("sent_bytes"),
        flat("received_bytes"),
        np.maximum(pairs["observed_seconds"].to_numpy(dtype=np.float64), 3600.0),
    )
    kept = scores.scored
    rows = pairs.loc[kept, list(CONTEXT)].reset_index(drop=True)
    rows["kind"] = "beacon"
    for name in SCORE_COLUMNS:
        rows[name] = getattr(scores, name)[kept]
    rows["interval_histogram"] = list(scores.interval_histogram[kept])
    rows["reasons"] = [
        describe(
            scores.pair(i),
            days_seen=r.days_seen,
            window_days=r.window_days_present,
            first_seen_age_days=r.first_seen_age_days,
            internal_sources_to_destination=r.internal_sources_to_destination,
            internal_sources=r.internal_sources,
        )
        for i, r in zip(np.flatnonzero(kept), rows.itertuples(index=False), strict=True)
    ]
    return rows[columns]


def _nulls_for_spark(frame: pd.DataFrame) -> pd.DataFrame:
    # Fields a row does not have (a strobe has no intervals, a pair without bytes no size
    # score) must reach Spark as null, not NaN.
    return frame.astype(object).where(frame.notna(), None)


def _context(pair: Any) -> dict[str, Any]:
    return {name: getattr(pair, name) for name in CONTEXT}


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


def _long_connection_row(pair: Any) -> dict[str, Any]:
    longest = float(pair.longest_connection_s)
    band, score = next((b, v) for b, v in LONG_CONNECTION_BANDS_S if longest >= b)
    return {
        **_context(pair),
        "kind": "long_connection",
        "score": score,
        "reasons": (
            f"long connection: one session open {human_interval(longest)} "
            f"(band {band // 3600} h or more), {pair.connections:,} connections in "
            f"{pair.days_seen} days, {pair.internal_sources_to_destination} of "
            f"{pair.internal_sources} internal hosts reach it"
        ),
    }


def _host_hash() -> Column:
    """The destination host name as a number: a fixed-width aggregate (see `_window_pairs`)."""
    name = F.col("destination_hostname")
    return F.when(name != "", F.xxhash64(name))


def _window_pairs(fanned: DataFrame, params: DetectionParams) -> DataFrame:
    """From `fanned` (daily summaries joined to each target day whose window holds them): one
    slim row per (target day, pair) over the window: counts, first and last seen, bytes; no
    event arrays. Small (a row per pair, not per pair and day), so it is cached
    and every window-wide context is computed from it. Only fixed-width aggregates: a string
    one (max, first) would turn this hash aggregation into a sort."""
    return (
        fanned.groupBy("target", *PAIR_KEY)
        .agg(
            F.sum("connections").alias("connections"),
            F.count(F.lit(1)).cast("int").alias("days_seen"),
            F.min("date").alias("pair_first_day"),
            F.min("first_seen").alias("first_seen"),
            F.max("last_seen").alias("last_seen"),
            F.sum("sent_bytes_total").alias("sent_bytes_total"),
            F.sum("received_bytes_total").alias("received_bytes_total"),
            F.max("is_strobe").alias("is_strobe"),
            # A pair is allowlisted when its destination is, on any day of the window.
            F.max(allowlisted(params.allowlist)).alias("allowlisted"),
            F.max(_host_hash()).alias("host_hash"),
            F.max("longest_connection_s").alias("longest_connection_s"),
        )
        # Per pair, not per daily row: the address checks run on a twentieth of the rows.
        .withColumn("src_internal", is_internal(F.col("SourceIP"), params.internal_networks))
        .withColumn("dst_internal", is_internal(F.col("DestinationIP"), params.internal_networks))
    )


def _candidate_pairs(
    fanned: DataFrame, windows: DataFrame, window_pairs: DataFrame, params: DetectionParams
) -> DataFrame:
    """One row per (target day, pair) worth scoring, with its context and, unless it is a
    strobe, its events over the window (times in ms from the window's start)."""
    destinations = _destination_context(window_pairs, "DestinationIP")
    # The window's observed time: a capture of 50 minutes, or a network whose logs start
    # mid-window, must not make every pair look short-lived.
    population = window_pairs.groupBy("target").agg(
        F.countDistinct(F.when(F.col("src_internal"), F.col("SourceIP"))).alias("internal_sources"),
        (F.unix_seconds(F.max("last_seen")) - F.unix_seconds(F.min("first_seen"))).alias(
            "observed_seconds"
        ),
        F.min("pair_first_day").alias("first_day_with_data"),
    )
    population = population.join(
        windows.select("target", "window_start", "window_days_present").distinct(), "target"
    )
    eligible = ~F.col("dst_internal") & ~F.col("allowlisted")
    pairs = window_pairs.filter(
        eligible
        & (
            (F.col("connections") >= params.min_connections)
            | F.col("is_strobe")
            | (F.col("longest_connection_s") >= LONG_CONNECTION_MIN_S)
        )
    )
    # Only the pairs to score bring their event arrays through the shuffle.
    # (A strobe's days carry no arrays: collect_list skips the nulls.)
    ip_pairs = (
        pairs.join(
            _gathered(fanned.join(pairs.select("target", *PAIR_KEY), ["target", *PAIR_KEY])),
            ["target", *PAIR_KEY],
            "left",
        )
        .join(destinations, ["target", "DestinationIP"], "left")
        .withColumn("destination_ips", F.array("DestinationIP"))
    )
    columns = [
        "target",
        *PAIR_KEY,
        "connections",
        "days_seen",
        "first_seen",
        "last_seen",
        "sent_bytes_total",
        "received_bytes_total",
        "is_strobe",
        "longest_connection_s",
        "event_ms",
        "sent_bytes",
        "received_bytes",
        "device_vendor",
        "destination_hostname",
        "destination_ips",
        "internal_sources_to_destination",
        "destination_first_day",
    ]
    candidates = ip_pairs.select(*columns)
    host_pairs = _host_name_pairs(fanned, window_pairs.filter(eligible), params)
    if host_pairs is not None:
        candidates = candidates.unionByName(host_pairs.select(*columns))
    return (
        candidates.join(F.broadcast(population), "target", "left")
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
        .withColumn("date", F.col("target"))
    )


def _destination_context(window_pairs: DataFrame, destination: str) -> DataFrame:
    """Per (target, destination): internal hosts reaching it, and its first day in the window."""
    return window_pairs.groupBy("target", destination).agg(
        F.countDistinct(F.when(F.col("src_internal"), F.col("SourceIP"))).alias(
            "internal_sources_to_destination"
        ),
        F.min("pair_first_day").alias("destination_first_day"),
    )


def _gathered(rows: DataFrame, *extra: Column) -> DataFrame:
    """Per (target, pair) of `rows`: the window's events in ms from its start, and the
    destination's names."""
    day = F.to_date("date")
    offset_ms = F.datediff(day, F.to_date("window_start")).cast("long") * MS_PER_DAY
    return rows.groupBy("target", *PAIR_KEY).agg(
        F.flatten(
            F.collect_list(F.transform("event_ms", lambda ms: ms.cast("long") + offset_ms))
        ).alias("event_ms"),
        F.flatten(F.collect_list("sent_bytes")).alias("sent_bytes"),
        F.flatten(F.collect_list("received_bytes")).alias("received_bytes"),
        F.max("device_vendor").alias("device_vendor"),
        F.max("destination_hostname").alias("destination_hostname"),
        *extra,
    )


def _host_name_pairs(
    fanned: DataFrame, window_pairs: DataFrame, params: DetectionParams
) -> DataFrame | None:
    """One pair per (target, source, host name, port, protocol) whose connections went to two
    or more addresses: C2 behind a CDN or domain fronting rotates IPs under one name, which
    splits its timer into sparse per-IP pairs. Scored like a pair; its DestinationIP is the
    address it used most, `destination_ips` all of them. Prevalence is that of the name.
    None when no name spans two addresses (the window's summaries are then not read again)."""
    by_host = ["target", "SourceIP", "host_hash", "DestinationPort", "Protocol"]
    groups = (
        window_pairs.filter(F.col("host_hash").isNotNull() & ~F.col("is_strobe"))
        .groupBy(*by_host)
        .agg(F.count(F.lit(1)).alias("addresses"), F.sum("connections").alias("connections"))
        .filter((F.col("addresses") >= 2) & (F.col("connections") >= params.min_connections))
        .select(*by_host)
    )
    if groups.isEmpty():  # from the cached window pairs: cheap
        return None
    destinations = _destination_context(
        window_pairs.filter(F.col("host_hash").isNotNull()), "host_hash"
    )
    rows = (
        fanned.withColumn("host_hash", _host_hash())
        .join(groups, by_host)
        .withColumn("_address", F.col("DestinationIP"))
    )
    # Per name, the per-IP daily rows are one pair: the IP in the key is the name's hash
    # until the aggregation below picks the address used most.
    gathered = _gathered(
        rows.withColumn("DestinationIP", F.col("host_hash").cast("string")),
        F.sum("connections").alias("connections"),
        F.countDistinct("date").cast("int").alias("days_seen"),
        F.min("first_seen").alias("first_seen"),
        F.max("last_seen").alias("last_seen"),
        F.sum("sent_bytes_total").alias("sent_bytes_total"),
        F.sum("received_bytes_total").alias("received_bytes_total"),
        F.array_sort(F.collect_set("_address")).alias("destination_ips"),
        F.max_by("_address", "connections").alias("_most_used"),
    )
    return (
        gathered.withColumn("host_hash", F.col("DestinationIP").cast("long"))
        .withColumn("DestinationIP", F.col("_most_used"))
        .join(destinations, ["target", "host_hash"], "left")
        .withColumn("is_strobe", F.lit(False))
        .withColumn("longest_connection_s", F.lit(None).cast("double"))
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
    """Keep strobes, long connections and the beacons worth an analyst's time, with the
    shared-timer context; a beacon scored by its host name stands for its per-IP pairs."""
    by_name = F.size("destination_ips") > 1
    # Peers share a destination: its address, or its name when the pair was scored by name.
    destination = F.when(by_name, F.concat(F.lit("name:"), "destination_hostname")).otherwise(
        F.col("DestinationIP")
    )
    peers = Window.partitionBy("date", destination, "DestinationPort", "Protocol")
    # Browsing a popular site can score near the threshold; it is not a timer unless its
    # regularity is beyond chance, so it does not make a C2 among the browsers a "schedule".
    periodic = (
        (F.col("kind") == "beacon")
        & (F.col("score") >= SHARED_TIMER_MIN_SCORE)
        & F.col("beyond_chance")
        & is_internal(F.col("SourceIP"), params.internal_networks)
    )
    scored = scored.withColumn(
        "periodic_sources_to_destination", F.sum(periodic.cast("long")).over(peers)
    )
    periodic_sources = F.col("periodic_sources_to_destination")
    several = periodic_sources >= SHARED_TIMER_MIN_HOSTS
    shared = several & (periodic_sources >= SHARED_TIMER_MIN_SHARE * F.col("internal_sources"))
    new_destination = F.col("new_destination")
    if params.profile == "notebook":
        keep = (
            (F.col("percent_beacon") > NOTEBOOK_MIN_PERCENT_BEACON)
            & (F.col("connections") > NOTEBOOK_MIN_CONNECTIONS)
            & (F.col("internal_sources_to_destination") < NOTEBOOK_MAX_DEGREE)
        )
    else:
        # A score alone can come from a dozen intervals whose regularity chance explains.
        keep = (
            (F.col("score") >= params.score_threshold)
            & F.col("beyond_chance")
            & (~shared | new_destination)
        )
    worm = F.concat(
        F.col("reasons"),
        F.lit("; possible worm: "),
        F.col("periodic_sources_to_destination").cast("string"),
        F.lit(" hosts share this timer to a destination first seen "),
        F.col("destination_age_days").cast("string"),
        F.lit(" days ago"),
    )
    group = F.concat(
        F.col("reasons"),
        F.lit("; "),
        periodic_sources.cast("string"),
        F.lit(" of "),
        F.col("internal_sources").cast("string"),
        F.lit(" internal hosts share this timer"),
    )
    reasons = (
        F.when(shared & new_destination, worm).when(several, group).otherwise(F.col("reasons"))
    )
    reasons = F.when(
        by_name,
        F.concat(
            reasons,
            F.lit("; one timer to "),
            F.col("destination_hostname"),
            F.lit(" over "),
            F.size("destination_ips").cast("string"),
            F.lit(" addresses"),
        ),
    ).otherwise(reasons)
    beacon = F.col("kind") == "beacon"
    reported = scored.filter(~beacon | keep).withColumn(
        "reasons", F.when(beacon, reasons).otherwise(F.col("reasons"))
    )
    # Reported once: where the beacon scored by name is reported, its per-IP pairs are not.
    same_name = Window.partitionBy(
        "date", "SourceIP", "destination_hostname", "DestinationPort", "Protocol"
    )
    named_beacon = F.max((beacon & by_name).cast("int")).over(same_name) == 1
    return (
        reported.withColumn("_named_beacon", named_beacon)
        .filter(
            ~beacon | by_name | F.col("destination_hostname").isNull() | ~F.col("_named_beacon")
        )
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
    lake = Lake(lake_url)
    in_lake = lake.days_in_table(STATS_TABLE)
    history_start = in_lake[0] if in_lake else None
    windows = {day: window_of(day, params, history_start) for day in days}
    present = set(in_lake) & {d for window in windows.values() for d in window}
    report: dict[str, dict[str, Any]] = {}
    for day, window in windows.items():
        have = [d for d in window if d in present]
        report[day.isoformat()] = {
            "window_start": window[0].isoformat(),
            "window_days": len(window),
            "window_days_present": len(have),
            "window_days_missing": [d.isoformat() for d in window if d not in present],
            "window_clipped": len(window) < params.lookback_days,
            "history_start": history_start.isoformat() if history_start else None,
        }
    # Which target days' windows each daily summary belongs to: a broadcast join, so a row is
    # copied once per target that needs it, not once per day of the lookback.
    windows_frame = spark.createDataFrame(
        [
            (d.isoformat(), day.isoformat(), window[0].isoformat(), len(present & set(window)))
            for day, window in windows.items()
            for d in window
            if d in present
        ],
        "date string, target string, window_start string, window_days_present int",
    )
    stats = lake_spark.read_days(spark, lake, STATS_TABLE, sorted(present), PAIR_DAILY_STATS)
    fanned = stats.join(F.broadcast(windows_frame), "date")
    window_pairs = _window_pairs(fanned, params).cache()
    pairs = _candidate_pairs(fanned, windows_frame, window_pairs, params)
    scored = pairs.mapInPandas(_score_batches(params.min_connections), SCORED)
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
        lake_spark.replace_days(reported, lake, TABLE, days, {d: c[0] for d, c in counts.items()})
    finally:
        reported.unpersist()
        window_pairs.unpersist()
    for day in days:
        key = day.isoformat()
        candidates, strobes = counts.get(key, (0, 0))
        report[key].update(rows=candidates, strobes=strobes)
        lake.write_manifest(TABLE, day, report[key])
    return report
