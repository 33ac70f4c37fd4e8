"""Export JSON lines → typed, deduplicated `network_sessions` parquet per day, plus quarantine.

A record belongs to day D when its TimeGenerated is on D. It is read from D's folders or, when it
arrived late, from the next day's first 12 hours of folders. Records that cannot be typed go to
`quarantine/date=D/` with the reason and the blob they came from; nothing is dropped silently.

Every line of a day's folders (and every late line that belongs to the day) ends in exactly one
of: a session row, a duplicate of one (`duplicates_dropped`), quarantine, `vendor_filtered`, or
`blank_lines` (an empty line is not a record, but it is counted). The day's report states
`lines == rows + duplicates_dropped + quarantined + vendor_filtered + blank_lines`.

Quarantine reasons:
- `malformed_json`: not exactly one JSON object on the line (garbage, a truncated line, an array,
  two objects run together, trailing text after the object);
- `duplicate_key`: the object names a column twice (which value is meant is ambiguous);
- `missing_timestamp`, `bad_timestamp`: no TimeGenerated, or one that is neither ISO 8601 with a
  time of day nor the portal form `3/31/2022, 10:52:35.857 AM` (a bare date is refused);
- `missing_ip`, `bad_ip`: SourceIP/DestinationIP absent, empty, or not an IPv4 (dotted, no
  leading zeros) or IPv6 address (IPv6 is kept and analysed like IPv4);
- `bad_port`, `bad_bytes`: present but not a whole number in 0–65535 / 0–2^62 (numbers sent as
  strings are accepted);
- `timestamp_outside_folder_day`: a valid record whose TimeGenerated is neither the folder's day
  nor, for the next day's first 12 hours of folders, the day before.

Unknown columns (not in CommonSecurityLog) are schema drift: they are ignored for typing, and
their names and counts are reported per day (`unknown_columns`). Missing optional columns are
nulls.

Duplicates. Export retries re-send records. Two records are the same connection when every typed
field is equal (so key order, JSON spacing, numbers sent as strings and surrounding blanks do not
matter) and their TimeGenerated fall in the same UTC second — near duplicates that differ only in
the timestamp's precision (`08:00:00.1234567Z` vs `08:00:00.123Z` or `08:00:00Z`). The copy with
the latest (most precise) TimeGenerated is kept. Two real connections are never merged this way
because they differ in source port; records without a source port (ICMP) are only merged when
their TimeGenerated is exactly equal.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipeline.spark_jobs import lake
from pipeline.spark_jobs.commonsecuritylog import COLUMNS as KNOWN_COLUMNS
from pipeline.spark_jobs.schemas import CORRUPT_COLUMN, EXPORT_RECORD, NETWORK_SESSIONS

TABLE = "network_sessions"
QUARANTINE_TABLE = "quarantine"

OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_TEXT = rf"({OCTET}\.){{3}}{OCTET}"
IPV4 = rf"^{IPV4_TEXT}$"
HEX_GROUPS = r"([0-9a-f]{1,4}(:[0-9a-f]{1,4})*)?"
IPV6_FULL = r"^[0-9a-f]{1,4}(:[0-9a-f]{1,4}){7}$"
IPV6_COMPRESSED = rf"^{HEX_GROUPS}::{HEX_GROUPS}$"
PORTAL_TIMESTAMP = "M/d/yyyy, h:mm:ss[.SSS] a"
# A timestamp must carry a time of day: Spark would read "2026-03-10" or "2026" as midnight.
HAS_TIME_OF_DAY = r"[0-9]:[0-9]{2}"
PROTOCOL_NUMBERS = {"1": "ICMP", "6": "TCP", "17": "UDP", "58": "ICMPV6"}
FOLDER_PATTERN = r"/y=(\d{4})/m=(\d{2})/d=(\d{2})/h=(\d{2})/"
WORKSPACE_PATTERN = r"/workspaces/([^/]+)/y="
# Drift report: at most this many unknown column names per day, each cut to this length.
MAX_UNKNOWN_COLUMNS = 20
MAX_COLUMN_NAME = 64


def _present(column: Column) -> Column:
    return column.isNotNull() & (F.trim(column) != "")


def _whole_number(name: str, low: int, high: int) -> tuple[Column, Column]:
    """(typed value, is-bad flag) for a numeric field sent as a JSON number or a string."""
    raw = F.col(name)
    number = F.expr(f"try_cast(trim(`{name}`) as double)")
    # Range first: floor() of a huge double overflows (an error under ANSI mode), and CASE WHEN
    # is the one construct Spark guarantees to evaluate lazily.
    valid = F.coalesce(F.when(number.between(low, high), number == F.floor(number)), F.lit(False))
    bad = _present(raw) & ~valid
    return F.when(valid, number.cast("long")), bad


def _ip(name: str) -> tuple[Column, Column]:
    """(normalised text, is-valid) for an IPv4 or IPv6 address, without a Python UDF."""
    value = F.lower(F.trim(F.col(name)))
    # An embedded IPv4 tail (::ffff:1.2.3.4) counts as two hex groups.
    hex_form = F.regexp_replace(value, f":{IPV4_TEXT}$", ":0:0")
    groups = F.size(F.filter(F.split(hex_form, ":"), lambda g: g != ""))
    ipv6 = value.contains(":") & (
        hex_form.rlike(IPV6_FULL) | (hex_form.rlike(IPV6_COMPRESSED) & (groups <= 7))
    )
    return value, F.coalesce(value.rlike(IPV4) | ipv6, F.lit(False))


def _classify(
    raw: DataFrame, days: list[dt.date], device_vendors: tuple[str, ...], nonce: str
) -> DataFrame:
    """One row per input line with `status` (kept, quarantined, other_day, blank,
    vendor_filtered), `reason` for quarantined lines, the target `date` and the line's JSON
    `unknown_columns` (for the schema-drift count)."""
    # The line is exactly one JSON value when `[line,"nonce"]` is a two-element array ending in
    # the nonce: text after the object (`{…} junk`, `{…}{…}`, `{…}]…`) cannot produce that.
    # Parsing the line a second time is only needed when a `}` comes before its end: a flat
    # record (the export's normal line) closes its one object with its first `}`.
    wrapped = F.concat(F.lit("["), F.col("value"), F.lit(f',"{nonce}"]'))
    flat_object = F.locate("}", F.col("value")) == F.length(F.rtrim(F.col("value")))
    parsed = raw.select(
        "value",
        "source_file",
        F.from_json(
            "value",
            EXPORT_RECORD,
            {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN},
        ).alias("r"),
        F.when(flat_object, F.lit(True))
        .otherwise(F.coalesce(F.get_json_object(wrapped, "$[1]") == nonce, F.lit(False)))
        .alias("_single"),
        F.json_object_keys("value").alias("_keys"),
    ).select("value", "source_file", "_single", "_keys", "r.*")

    folder_day = F.to_date(
        F.concat_ws(
            "-",
            F.regexp_extract("source_file", FOLDER_PATTERN, 1),
            F.regexp_extract("source_file", FOLDER_PATTERN, 2),
            F.regexp_extract("source_file", FOLDER_PATTERN, 3),
        )
    )
    folder_hour = F.regexp_extract("source_file", FOLDER_PATTERN, 4).cast("int")
    ts = F.when(
        F.col("TimeGenerated").rlike(HAS_TIME_OF_DAY),
        F.coalesce(
            F.expr("try_cast(trim(TimeGenerated) as timestamp)"),
            F.expr(f"try_to_timestamp(trim(TimeGenerated), '{PORTAL_TIMESTAMP}')"),
        ),
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
    staged = (
        parsed.withColumn("folder_day", folder_day)
        .withColumn("folder_hour", folder_hour)
        .withColumn("ts", ts)
    )
    typing_reason = (
        F.when(F.col(CORRUPT_COLUMN).isNotNull() | ~F.col("_single"), "malformed_json")
        .when(F.size("_keys") != F.size(F.array_distinct("_keys")), "duplicate_key")
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
    own_folder = F.coalesce(
        F.date_format("folder_day", "yyyy-MM-dd").isin(day_strings), F.lit(False)
    )
    vendor_ok = (
        F.coalesce(F.trim("DeviceVendor").isin(list(device_vendors)), F.lit(False))
        if device_vendors
        else F.lit(True)
    )
    reason = F.coalesce(
        F.col("typing_reason"),
        F.when(F.col("target").isNull(), F.lit("timestamp_outside_folder_day")),
    )
    status = (
        F.when(F.col("value").rlike(r"^\s*$"), "blank")
        .when(F.col("reason").isNotNull(), F.when(own_folder, "quarantined").otherwise("other_day"))
        .when(~F.col("target").isin(day_strings), "other_day")
        .when(~vendor_ok, "vendor_filtered")
        .otherwise("kept")
    )
    return (
        staged.withColumn("typing_reason", typing_reason)
        .withColumn("target", F.date_format(belongs_to, "yyyy-MM-dd"))
        .withColumn("reason", reason)
        .withColumn("status", status)
        .withColumn("reason", F.when(F.col("status") == "quarantined", F.col("reason")))
        .withColumn(
            "date",
            F.when(F.col("status").isin("kept", "vendor_filtered"), F.col("target")).otherwise(
                F.date_format("folder_day", "yyyy-MM-dd")
            ),
        )
        .select(
            # The raw line is kept only where it is needed (quarantine): the frame is cached.
            F.when(F.col("status") == "quarantined", F.col("value")).alias("value"),
            F.when(F.col("status") == "quarantined", F.col("source_file")).alias("source_file"),
            "status",
            "reason",
            "date",
            F.coalesce(F.col("folder_day") != F.to_date("target"), F.lit(False)).alias(
                "late_arrival"
            ),
            # Only the names that are not CommonSecurityLog's (usually none) travel on.
            F.filter(
                F.array_distinct("_keys"), lambda name: ~name.isin(sorted(KNOWN_COLUMNS))
            ).alias("unknown_columns"),
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


def _deduplicated(kept: DataFrame) -> DataFrame:
    """One row per connection: see "Duplicates" in the module docstring."""
    fields = [f.name for f in NETWORK_SESSIONS.fields]
    others = [name for name in fields if name != "TimeGenerated"]
    second = F.when(
        F.col("SourcePort").isNotNull(), F.date_trunc("second", "TimeGenerated")
    ).otherwise(F.col("TimeGenerated"))
    return (
        kept.withColumn("_second", second)
        .groupBy(*others, "_second")
        .agg(F.max("TimeGenerated").alias("TimeGenerated"))
        .select(*fields)
    )


def run(
    spark: SparkSession,
    *,
    lake_url: str,
    days: list[dt.date],
    blob_urls: list[str],
    device_vendors: tuple[str, ...] = (),
    source_prefixes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Type and deduplicate the export records of `days`; write sessions and quarantine.

    `blob_urls` are the days' blobs plus the next day's first 12 hours. When they are local
    copies of remote blobs, `source_prefixes` maps each copy's folder to the remote one, so
    quarantine names the blob an operator can open, not a deleted temporary file. Returns, per
    day, the counts an operator needs to trust the day (lines, kept, duplicates, quarantined by
    reason, unknown columns).
    """
    if not blob_urls:
        raw = spark.createDataFrame([], "value string, source_file string")
    else:
        source_file = F.col("_metadata.file_path")
        for local, remote in (source_prefixes or {}).items():
            pattern = r"^(file:(//)?)?\Q" + local + r"\E"
            source_file = F.regexp_replace(source_file, pattern, remote.replace("$", r"\$"))
        raw = spark.read.text([lake.spark_url(u) for u in blob_urls]).select(
            "value", source_file.alias("source_file")
        )
    classified = _classify(raw, days, device_vendors, uuid.uuid4().hex).cache()
    try:
        tallies = classified.groupBy("date", "status", "reason", "late_arrival").count().collect()
        drift = _unknown_columns(classified)
        sessions = _deduplicated(classified.filter(F.col("status") == "kept")).cache()
        rows_per_day = {r["date"]: r["count"] for r in sessions.groupBy("date").count().collect()}
        lake.replace_days(sessions, lake_url, TABLE, days, rows_per_day)
        quarantine = classified.filter(F.col("status") == "quarantined").select(
            "reason",
            "source_file",
            # Invalid UTF-8 (a binary blob) is replaced by U+FFFD: parquet readers such as
            # pyarrow refuse invalid strings. The original bytes stay in `source_file`.
            F.decode(F.encode("value", "UTF-8"), "UTF-8").alias("record"),
            "date",
        )
        quarantined_per_day: dict[str, int] = defaultdict(int)
        for row in tallies:
            if row["status"] == "quarantined":
                quarantined_per_day[row["date"]] += row["count"]
        lake.replace_days(quarantine, lake_url, QUARANTINE_TABLE, days, quarantined_per_day)
        sessions.unpersist()
    finally:
        classified.unpersist()

    report = _day_report(days, tallies, rows_per_day, drift)
    for day in days:
        lake.write_manifest(lake_url, TABLE, day, report[day.isoformat()])
        lake.write_manifest(
            lake_url, QUARANTINE_TABLE, day, {"rows": report[day.isoformat()]["quarantined"]}
        )
    return report


def _unknown_columns(classified: DataFrame) -> list[Any]:
    """Schema drift per day: columns that are neither CommonSecurityLog's nor `_`-prefixed
    system columns, with the records carrying each; the most frequent few per day (so a blob of
    random keys cannot flood the driver), and how many distinct names there were."""
    per_day = Window.partitionBy("date")
    return (
        classified.filter(F.col("status").isin("kept", "vendor_filtered", "quarantined"))
        .filter(F.size("unknown_columns") > 0)
        .select("date", F.explode("unknown_columns").alias("column"))
        .filter(~F.col("column").startswith("_"))
        .groupBy("date", "column")
        .count()
        .withColumn("names", F.count("*").over(per_day))
        .withColumn("rank", F.row_number().over(per_day.orderBy(F.desc("count"), "column")))
        .filter(F.col("rank") <= MAX_UNKNOWN_COLUMNS)
        .collect()
    )


def _day_report(
    days: list[dt.date], tallies: list[Any], rows_per_day: dict[str, int], drift: list[Any]
) -> dict[str, dict[str, Any]]:
    report: dict[str, dict[str, Any]] = {}
    for day in days:
        key = day.isoformat()
        mine = [r for r in tallies if r["date"] == key]

        def count(status: str, rows: list[Any] = mine) -> int:
            return sum(r["count"] for r in rows if r["status"] == status)

        kept = count("kept")
        reasons: dict[str, int] = defaultdict(int)
        for r in mine:
            if r["status"] == "quarantined":
                reasons[r["reason"]] += r["count"]
        quarantined = sum(reasons.values())
        rows = rows_per_day.get(key, 0)
        unknown = sorted(
            ((r["column"], r["count"]) for r in drift if r["date"] == key),
            key=lambda item: (-item[1], item[0]),
        )
        report[key] = {
            "lines": kept + quarantined + count("vendor_filtered") + count("blank"),
            "rows": rows,
            "records_kept_before_dedup": kept,
            "duplicates_dropped": kept - rows,
            "late_records": sum(
                r["count"] for r in mine if r["status"] == "kept" and r["late_arrival"]
            ),
            "vendor_filtered": count("vendor_filtered"),
            "blank_lines": count("blank"),
            "quarantined": quarantined,
            "quarantine_reasons": dict(sorted(reasons.items())),
            "quarantine_ratio": quarantined / (kept + quarantined) if kept + quarantined else 0.0,
            "unknown_columns": {name[:MAX_COLUMN_NAME]: n for name, n in unknown},
            "unknown_column_names": max((r["names"] for r in drift if r["date"] == key), default=0),
        }
    return report
