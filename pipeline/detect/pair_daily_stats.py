"""`network_sessions` of a day → one compact row per (source, destination, port, protocol).

Each row keeps the pair's connection times (ms since midnight) and byte sizes as aligned arrays,
so the lookback window is scored from N small daily summaries instead of N days of raw events.
Strobes (more connections a day than `STROBE_CONNECTIONS_PER_DAY`) keep only their counts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.ingest.network_sessions import TABLE as SESSIONS_TABLE
from pipeline.lake import Lake
from pipeline.lake import spark as lake_spark
from pipeline.lake.schemas import NETWORK_SESSIONS, PAIR_DAILY_STATS, PAIR_KEY

TABLE = "pair_daily_stats"
# RITA's strobe limit: one connection a second all day is not a beacon, it is a stream.
STROBE_CONNECTIONS_PER_DAY = 86_400


def run(spark: SparkSession, *, lake_url: str, days: list[dt.date]) -> dict[str, Any]:
    """Summarise the sessions of `days` per pair; returns rows and strobes per day."""
    lake = Lake(lake_url)
    present = lake.days_present(SESSIONS_TABLE, days)
    missing = sorted(set(days) - set(present))
    if missing:
        raise FileNotFoundError(
            f"network_sessions is missing for {', '.join(d.isoformat() for d in missing)}: "
            "materialize those days of network_sessions first"
        )
    sessions = lake_spark.read_days(spark, lake, SESSIONS_TABLE, present, NETWORK_SESSIONS)
    midnight = F.to_timestamp(F.col("date"))
    ms_of_day = ((F.unix_micros("TimeGenerated") - F.unix_micros(midnight)) / 1000).cast("int")
    events = F.array_sort(
        F.collect_list(
            F.struct(
                ms_of_day.alias("ms"),
                F.coalesce("SentBytes", F.lit(-1)).alias("sent"),
                F.coalesce("ReceivedBytes", F.lit(-1)).alias("received"),
            )
        )
    )
    stats = sessions.groupBy("date", *PAIR_KEY).agg(
        F.count(F.lit(1)).alias("connections"),
        F.min("TimeGenerated").alias("first_seen"),
        F.max("TimeGenerated").alias("last_seen"),
        F.sum("SentBytes").alias("sent_bytes_total"),
        F.sum("ReceivedBytes").alias("received_bytes_total"),
        events.alias("events"),
        F.max("DeviceVendor").alias("device_vendor"),
        F.max("DestinationHostName").alias("destination_hostname"),
        F.max(F.unix_micros("EndTime") - F.unix_micros("StartTime")).alias("_longest_us"),
    )
    is_strobe = F.col("connections") > STROBE_CONNECTIONS_PER_DAY
    stats = stats.select(
        *PAIR_KEY,
        "connections",
        "first_seen",
        "last_seen",
        "sent_bytes_total",
        "received_bytes_total",
        F.when(~is_strobe, F.col("events.ms")).alias("event_ms"),
        F.when(~is_strobe, F.col("events.sent")).alias("sent_bytes"),
        F.when(~is_strobe, F.col("events.received")).alias("received_bytes"),
        is_strobe.alias("is_strobe"),
        "device_vendor",
        "destination_hostname",
        (F.col("_longest_us") / 1e6).alias("longest_connection_s"),
        "date",
    ).select(*[f.name for f in PAIR_DAILY_STATS.fields])

    stats = stats.cache()
    try:
        per_day = {
            r["date"]: (r["pairs"], r["strobes"])
            for r in stats.groupBy("date")
            .agg(
                F.count(F.lit(1)).alias("pairs"),
                F.sum(F.col("is_strobe").cast("int")).alias("strobes"),
            )
            .collect()
        }
        rows = {d: v[0] for d, v in per_day.items()}
        lake_spark.replace_days(stats, lake, TABLE, days, rows)
    finally:
        stats.unpersist()
    report = {}
    for day in days:
        pairs, strobes = per_day.get(day.isoformat(), (0, 0))
        report[day.isoformat()] = {"rows": pairs, "strobes": strobes}
        lake.write_manifest(TABLE, day, report[day.isoformat()])
    return report
