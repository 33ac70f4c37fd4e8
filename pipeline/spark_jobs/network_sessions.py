"""Export JSON lines → typed, deduplicated `network_sessions` parquet per day, plus quarantine.

A record belongs to day D when its TimeGenerated is on D. It is read from D's folders or, when it
arrived late, from the next day's first 12 hours of folders. Records that cannot be typed go to
`quarantine/date=D/` with the reason and the blob they came from; nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.spark_jobs import lake
from pipeline.spark_jobs.schemas import CORRUPT_COLUMN, EXPORT_RECORD, NETWORK_SESSIONS

TABLE = "network_sessions"
QUARANTINE_TABLE = "quarantine"

OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"^({OCTET}\.){{3}}{OCTET}$"
# Hex groups, optionally ending in an embedded IPv4 (::ffff:1.2.3.4).
IPV6 = rf"^[0-9a-f]{{0,4}}(:[0-9a-f]{{0,4}}){{2,7}}(:({OCTET}\.){{3}}{OCTET})?$"
PORTAL_TIMESTAMP = "M/d/yyyy, h:mm:ss[.SSS] a"
PROTOCOL_NUMBERS = {"1": "ICMP", "6": "TCP", "17": "UDP", "58": "ICMPV6"}
FOLDER_PATTERN = r"/y=(\d{4})/m=(\d{2})/d=(\d{2})/h=(\d{2})/"
WORKSPACE_PATTERN = r"/workspaces/([^/]+)/y="


def _present(column: Column) -> Column:
    return column.isNotNull() & (F.trim(column) != "")


def _whole_number(name: str, low: int, high: int) -> tuple[Column, Column]:
    """(typed value, is-bad flag) for a numeric field sent as a JSON number or a string."""
    raw = F.col(name)
    number = F.expr(f"try_cast(trim(`{name}`) as double)")
    valid = number.isNotNull() & (number == F.floor(number)) & number.between(low, high)
    bad = _present(raw) & ~valid
    return F.when(valid, number.cast("long")), bad


def _ip(name: str) -> tuple[Column, Column]:
    value = F.lower(F.trim(F.col(name)))
    valid = value.rlike(IPV4) | (value.contains(":") & value.rlike(IPV6))
    return value, valid


def _classify(raw: DataFrame, days: list[dt.date], device_vendors: tuple[str, ...]) -> DataFrame:
    """One row per input line with `status` (kept, quarantined, other_day, blank,
    vendor_filtered), `reason` for quarantined lines and the target `date`."""
    parsed = raw.select(
        "value",
        "source_file",
        F.from_json(
            "value",
            EXPORT_RECORD,
            {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN},
        ).alias("r"),
    ).select("value", "source_file", "r.*")

    folder_day = F.to_date(
        F.concat_ws(
            "-",
            F.regexp_extract("source_file", FOLDER_PATTERN, 1),
            F.regexp_extract("source_file", FOLDER_PATTERN, 2),
            F.regexp_extract("source_file", FOLDER_PATTERN, 3),
        )
    )
    folder_hour = F.regexp_extract("source_file", FOLDER_PATTERN, 4).cast("int")
    ts = F.coalesce(
        F.expr("try_cast(TimeGenerated as timestamp)"),
        F.expr(f"try_to_timestamp(TimeGenerated, '{PORTAL_TIMESTAMP}')"),
    )
    source_ip, source_ok = _ip("SourceIP")
    destination_ip, destination_ok = _ip("DestinationIP")
    source_port, source_port_bad = _whole_number("SourcePort", 0, 65535)
    destination_port, destination_port_bad = _whole_number("DestinationPort", 0, 65535)
    sent, sent_bad = _whole_number("SentBytes", 0, 2**62)
    received, received_bad = _whole_number("ReceivedBytes", 0, 2**62)
    protocol = F.upper(F.trim("Protocol"))
    protocol = F.coalesce(
        F.create_map(*[F.lit(x) for kv in PROTOCOL_NUMBERS.items() for x in kv])[protocol], protocol
    )

    reason = (
        F.when(F.col(CORRUPT_COLUMN).isNotNull(), "malformed_json")
        .when(~_present(F.col("TimeGenerated")), "missing_timestamp")
        .when(F.col("ts").isNull(), "bad_timestamp")
        .when(~_present(F.col("SourceIP")) | ~_present(F.col("DestinationIP")), "missing_ip")
        .when(~source_ok | ~destination_ok, "bad_ip")
        .when(source_port_bad | destination_port_bad, "bad_port")
        .when(sent_bad | received_bad, "bad_bytes")
    )
    event_day = F.to_date("ts")
    # A record may sit in its own day's folders or, late, in the next day's first 12 hours.
    belongs_to = F.when(event_day == F.col("folder_day"), event_day).when(
        (event_day == F.date_sub(F.col("folder_day"), 1)) & (F.col("folder_hour") < 12), event_day
    )
    day_strings = [d.isoformat() for d in days]
    own_folder = F.date_format("folder_day", "yyyy-MM-dd").isin(day_strings)
    target = F.date_format(belongs_to, "yyyy-MM-dd")

    staged = (
        parsed.withColumn("folder_day", folder_day)
        .withColumn("folder_hour", folder_hour)
        .withColumn("ts", ts)
    )
    vendor_ok = F.col("DeviceVendor").isin(list(device_vendors)) if device_vendors else F.lit(True)
    status = (
        F.when(F.trim("value") == "", "blank")
        .when(F.col("reason").isNotNull(), F.when(own_folder, "quarantined").otherwise("other_day"))
        .when(F.col("target").isNull(), F.when(own_folder, "quarantined").otherwise("other_day"))
        .when(~F.col("target").isin(day_strings), "other_day")
        .when(~vendor_ok, "vendor_filtered")
        .otherwise("kept")
    )
    return (
        staged.withColumn("reason", reason)
        .withColumn("target", target)
        .withColumn(
            "reason",
            F.when(
                F.col("reason").isNull() & F.col("target").isNull(), "timestamp_outside_folder_day"
            ).otherwise(F.col("reason")),
        )
        .withColumn("status", status)
        .withColumn(
            "date",
            F.when(F.col("status") == "kept", F.col("target")).otherwise(
                F.date_format("folder_day", "yyyy-MM-dd")
            ),
        )
        .select(
            "value",
            "source_file",
            "status",
            "reason",
            "date",
            (F.col("folder_day") != F.to_date("target")).alias("late_arrival"),
            F.col("ts").alias("TimeGenerated"),
            source_ip.alias("SourceIP"),
            source_port.cast("int").alias("SourcePort"),
            destination_ip.alias("DestinationIP"),
            destination_port.cast("int").alias("DestinationPort"),
            protocol.alias("Protocol"),
            sent.alias("SentBytes"),
            received.alias("ReceivedBytes"),
            F.trim("DeviceVendor").alias("DeviceVendor"),
            F.trim("DeviceProduct").alias("DeviceProduct"),
            F.trim("DeviceAction").alias("DeviceAction"),
            F.lower(F.trim("DestinationHostName")).alias("DestinationHostName"),
            F.regexp_extract("source_file", WORKSPACE_PATTERN, 1).alias("workspace"),
        )
    )


def run(
    spark: SparkSession,
    *,
    lake_url: str,
    days: list[dt.date],
    blob_urls: list[str],
    device_vendors: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Type and deduplicate the export records of `days`; write sessions and quarantine.

    `blob_urls` are the days' blobs plus the next day's first 12 hours. Returns, per day, the
    counts an operator needs to trust the day (read, kept, duplicates, quarantined by reason).
    """
    if not blob_urls:
        raw = spark.createDataFrame([], "value string, source_file string")
    else:
        raw = spark.read.text([lake.spark_url(u) for u in blob_urls]).select(
            "value", F.col("_metadata.file_path").alias("source_file")
        )
    classified = _classify(raw, days, device_vendors).cache()
    try:
        tallies = classified.groupBy("date", "status", "reason", "late_arrival").count().collect()
        sessions = (
            classified.filter(F.col("status") == "kept")
            .select(*[f.name for f in NETWORK_SESSIONS.fields])
            .dropDuplicates()
            .cache()
        )
        rows_per_day = {r["date"]: r["count"] for r in sessions.groupBy("date").count().collect()}
        lake.replace_days(sessions, lake_url, TABLE, days, rows_per_day)
        quarantine = classified.filter(F.col("status") == "quarantined").select(
            "reason", "source_file", F.col("value").alias("record"), "date"
        )
        quarantined_per_day: dict[str, int] = defaultdict(int)
        for row in tallies:
            if row["status"] == "quarantined":
                quarantined_per_day[row["date"]] += row["count"]
        lake.replace_days(quarantine, lake_url, QUARANTINE_TABLE, days, quarantined_per_day)
        sessions.unpersist()
    finally:
        classified.unpersist()

    report = _day_report(days, tallies, rows_per_day)
    for day in days:
        lake.write_manifest(lake_url, TABLE, day, report[day.isoformat()])
        lake.write_manifest(
            lake_url, QUARANTINE_TABLE, day, {"rows": report[day.isoformat()]["quarantined"]}
        )
    return report


def _day_report(
    days: list[dt.date], tallies: list[Any], rows_per_day: dict[str, int]
) -> dict[str, dict[str, Any]]:
    report: dict[str, dict[str, Any]] = {}
    for day in days:
        key = day.isoformat()
        mine = [r for r in tallies if r["date"] == key]
        kept = sum(r["count"] for r in mine if r["status"] == "kept")
        reasons: dict[str, int] = defaultdict(int)
        for r in mine:
            if r["status"] == "quarantined":
                reasons[r["reason"]] += r["count"]
        quarantined = sum(reasons.values())
        rows = rows_per_day.get(key, 0)
        report[key] = {
            "rows": rows,
            "records_kept_before_dedup": kept,
            "duplicates_dropped": kept - rows,
            "late_records": sum(
                r["count"] for r in mine if r["status"] == "kept" and r["late_arrival"]
            ),
            "vendor_filtered": sum(r["count"] for r in mine if r["status"] == "vendor_filtered"),
            "quarantined": quarantined,
            "quarantine_reasons": dict(sorted(reasons.items())),
            "quarantine_ratio": quarantined / (kept + quarantined) if kept + quarantined else 0.0,
        }
    return report
