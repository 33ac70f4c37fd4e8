"""The Sentinel notebook's beaconing query, as shipped and with its grouping fixed (REFERENCE §1).

Kept only as a yardstick for `make eval` and `make bench`: it is not the detector. Both variants
read raw `network_sessions` for the whole window, as the notebook re-reads raw JSON.

As shipped: intervals are taken per *source* (a busy host's C2 intervals are gaps to other
destinations), the ±2-row window is ordered by `SourceIP.cast("long")` (NULL for dotted IPs, so
the frame is arbitrary; under Spark 4's ANSI mode the cast is an error, so we use try_cast to keep
Spark 3's NULL), and the denominator sums the windowed sums (double counting). Fixed: intervals
per pair, the window ordered by the interval, the denominator the pair's interval count.
"""

import datetime as dt

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipeline.ingest.network_sessions import TABLE as SESSIONS_TABLE
from pipeline.lake import Lake
from pipeline.lake import spark as lake_spark
from pipeline.lake.schemas import NETWORK_SESSIONS

PRIVATE = r"^127\.|^10\.|^172\.1[6-9]\.|^172\.2[0-9]\.|^172\.3[0-1]\.|^192\.168\."
DAILY_EVENT_COUNT_THRESHOLD = 100
DEGREE_OF_SRCIP_THRESHOLD = 25
TIME_DELTA_THRESHOLD = 15
PERCENT_BEACON_THRESHOLD = 75
PAIR = ["DeviceVendor", "SourceIP", "DestinationIP", "DestinationPort", "Protocol"]


def run(
    spark: SparkSession,
    *,
    lake_url: str,
    days: list[dt.date],
    fixed: bool,
    device_vendor: str | None = "Fortinet",
) -> DataFrame:
    """The notebook's result rows (one per reported pair) over the sessions of `days`."""
    sessions = lake_spark.read_days(spark, Lake(lake_url), SESSIONS_TABLE, days, NETWORK_SESSIONS)
    return query(sessions, fixed=fixed, device_vendor=device_vendor)


def query(sessions: DataFrame, *, fixed: bool, device_vendor: str | None = "Fortinet") -> DataFrame:
    """The notebook's query over any frame with its nine columns (typed sessions or raw JSON)."""
    df = sessions.select(
        "TimeGenerated",
        "SourceIP",
        "SourcePort",
        "DestinationIP",
        "DestinationPort",
        "Protocol",
        "ReceivedBytes",
        "SentBytes",
        "DeviceVendor",
    )
    if device_vendor:
        df = df.filter(F.col("DeviceVendor") == device_vendor)
    df = df.filter(~F.col("DestinationIP").rlike(PRIVATE)).na.drop()
    busy = df.groupBy("SourceIP").count().filter(F.col("count") > DAILY_EVENT_COUNT_THRESHOLD)
    rare = (
        df.groupBy("DestinationIP")
        .agg(F.countDistinct("SourceIP").alias("degree"))
        .filter(F.col("degree") < DEGREE_OF_SRCIP_THRESHOLD)
    )
    df = df.join(busy.select("SourceIP"), "SourceIP").join(
        rare.select("DestinationIP"), "DestinationIP"
    )
    lag_over = Window.partitionBy(*(PAIR[1:] if fixed else ["SourceIP"])).orderBy("TimeGenerated")
    seconds = F.unix_timestamp("TimeGenerated")
    df = df.withColumn("delta", seconds - F.lag(seconds).over(lag_over)).filter(
        F.col("delta") > TIME_DELTA_THRESHOLD
    )
    counts = df.groupBy(*PAIR, "delta").count()
    order = F.col("delta") if fixed else F.expr("try_cast(SourceIP as bigint)")
    around = Window.partitionBy(*PAIR[:4]).orderBy(order).rowsBetween(-2, 2)
    whole = Window.partitionBy(*PAIR[:4])
    counts = counts.withColumn("near", F.sum("count").over(around))
    total = F.sum("count").over(whole) if fixed else F.sum("near").over(whole)
    counts = counts.withColumn("total", total).withColumn(
        "Percentbeacon", F.col("near") / F.col("total") * 100
    )
    return (
        counts.filter(
            (F.col("Percentbeacon") > PERCENT_BEACON_THRESHOLD)
            & (F.col("total") > DAILY_EVENT_COUNT_THRESHOLD)
        )
        .groupBy(*PAIR[1:])
        .agg(F.max("Percentbeacon").alias("Percentbeacon"), F.max("total").alias("total"))
    )
