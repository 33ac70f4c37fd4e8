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
- `bad_time_range`: StartTime or EndTime present but not ISO 8601, or EndTime before StartTime
  (the session's span, which long connections are measured by);
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

from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.ingest.commonsecuritylog import COLUMNS as KNOWN_COLUMNS
from pipeline.lake import Lake
from pipeline.lake import spark as lake_spark
from pipeline.lake.schemas import CORRUPT_COLUMN, EXPORT_RECORD, NETWORK_SESSIONS
from pipeline.spark.compat import is_valid_utf8, try_cast

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
# `/y=2026/m=03/d=22/h=02/`: fixed width, so year, month, day and hour are substrings of the one
# match (1-based offsets 4, 11, 16, 21) instead of one regex search of the path per field.
FOLDER_PATTERN = r"/y=\d{4}/m=\d{2}/d=\d{2}/h=\d{2}/"
WORKSPACE_PATTERN = r"/workspaces/([^/]+)/y="
# Drift report: at most this many unknown column names per day, each cut to this length.
MAX_UNKNOWN_COLUMNS = 20
MAX_COLUMN_NAME = 64
# Only TimeGenerated: enough to tell which late-window lines can belong to the run's days.
TIME_ONLY = T.StructType([EXPORT_RECORD["TimeGenerated"]])


def _present(column: Column) -> Column:
    return column.isNotNull() & (F.trim(column) != "")


def _whole_number(raw: Column, low: int, high: int) -> Column:
    """A numeric field sent as a JSON number or a string, typed; null when absent or not a whole
    number in range (so `_present(raw) & typed.isNull()` is the is-bad flag)."""
    number = try_cast(F.trim(raw), "double")
    # Range first: floor() of a huge double overflows (an error under ANSI mode), and CASE WHEN
    # is the one construct Spark guarantees to evaluate lazily.
    valid = F.coalesce(F.when(number.between(low, high), number == F.floor(number)), F.lit(False))
    return F.when(valid, number.cast("long"))


def _ip_ok(value: Column) -> Column:
    """Whether a normalised (trimmed, lower-case) text is an IPv4 or IPv6 address, without a
    Python UDF."""
    # An embedded IPv4 tail (::ffff:1.2.3.4) counts as two hex groups.
    hex_form = F.regexp_replace(value, f":{IPV4_TEXT}$", ":0:0")
    groups = F.size(F.filter(F.split(hex_form, ":"), lambda g: g != ""))
    ipv6 = value.contains(":") & (
        hex_form.rlike(IPV6_FULL) | (hex_form.rlike(IPV6_COMPRESSED) & (groups <= 7))
    )
    return F.coalesce(value.rlike(IPV4) | ipv6, F.lit(False))


def _timestamp(text: Column) -> Column:
    """TimeGenerated typed: ISO 8601 with a time of day, or the portal form; null otherwise."""
    trimmed = F.trim(text)
    return F.when(
        text.rlike(HAS_TIME_OF_DAY),
        F.coalesce(
            try_cast(trimmed, "timestamp"), F.try_to_timestamp(trimmed, F.lit(PORTAL_TIMESTAMP))
        ),
    )


def _classify(
    raw: DataFrame, days: list[dt.date], device_vendors: tuple[str, ...], nonce: str
) -> DataFrame:
    """One row per input line with `status` (kept, quarantined, other_day, blank,
    vendor_filtered), `reason` for quarantined lines, the target `date` and the line's JSON
    `unknown_columns` (for the schema-drift count). Lines of the next day's folders that cannot
    belong to `days` are left out (see the pre-filter below)."""
    # The next day's lines are read only for the late records of `days`. Such a line counts for
    # the run only as a session row or as vendor_filtered (anything else in it is the next
    # day's business, status other_day), and both need a TimeGenerated on one of `days`.
    # Parsing only that field, with the same parser, options and typing, keeps every such line
    # and drops the rest (a third of what a daily run reads) before the expensive part. Lines of
    # the days' own folders all go on (a cheap superset test of the path, exact below).
    own_path = F.lit(False)
    for day in days:
        folder_of_day = f"/y={day:%Y}/m={day:%m}/d={day:%d}/h="
        own_path = own_path | F.col("source_file").contains(folder_of_day)
    may_belong = F.to_date(
        _timestamp(F.from_json("value", TIME_ONLY).getField("TimeGenerated"))
    ).isin(days)
    lines = raw.filter(own_path | may_belong)

    # Facts of the raw line, before the full parse. The line is exactly one JSON value when
    # `[line,"nonce"]` is a two-element array ending in the nonce: text after the object
    # (`{…} junk`, `{…}{…}`, `{…}]…`) cannot produce that. Parsing the line a second time is
    # only needed when a `}` comes before its end: a flat record (the export's normal line)
    # closes its one object with its first `}`. In valid UTF-8 that test is done on bytes
    # (a `}` byte is always the character): counting characters costs two walks of the line,
    # three times the CPU. Invalid UTF-8 keeps the character test, which can skip a `}`.
    wrapped = F.concat(F.lit("["), F.col("value"), F.lit(f',"{nonce}"]'))
    by_characters = F.locate("}", F.col("value")) == F.length(F.rtrim(F.col("value")))
    valid_utf8 = is_valid_utf8(F.col("value"))
    flat_object = (
        by_characters
        if valid_utf8 is None  # Spark 3.5: the slower test for every line
        else F.when(
            valid_utf8,
            F.octet_length(F.substring_index("value", "}", 1)) + 1
            == F.octet_length(F.rtrim("value")),
        ).otherwise(by_characters)
    )
    folder = F.regexp_extract("source_file", FOLDER_PATTERN, 0)
    folder_day = F.to_date(
        F.concat_ws(
            "-", F.substring(folder, 4, 4), F.substring(folder, 11, 2), F.substring(folder, 16, 2)
        )
    )
    keys = lines.select(
        "value",
        "source_file",
        folder_day.alias("folder_day"),
        F.substring(folder, 21, 2).cast("int").alias("folder_hour"),
        F.col("value").rlike(r"^\s*$").alias("_blank"),
        F.when(flat_object, F.lit(True))
        .otherwise(F.coalesce(F.get_json_object(wrapped, "$[1]") == nonce, F.lit(False)))
        .alias("_single"),
        F.json_object_keys("value").alias("_keys"),
    )
    distinct_keys = F.array_distinct("_keys")
    parsed = keys.select(
        "value",
        "source_file",
        "folder_day",
        "folder_hour",
        F.coalesce(
            F.date_format("folder_day", "yyyy-MM-dd").isin([d.isoformat() for d in days]),
            F.lit(False),
        ).alias("own_folder"),
        "_blank",
        "_single",
        (F.size("_keys") != F.size(distinct_keys)).alias("_duplicate_key"),
        # Only the names that are not CommonSecurityLog's (usually none) travel on.
        F.filter(distinct_keys, lambda name: ~name.isin(sorted(KNOWN_COLUMNS))).alias(
            "unknown_columns"
        ),
        F.from_json(
            "value",
            EXPORT_RECORD,
            {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN},
        ).alias("r"),
    )

    # Every field is typed once; the quarantine reasons are read off the typed values.
    # Spark generates everything from here to the cache as one Java method (from_json above
    # ends the previous one), and HotSpot never JIT-compiles a method of more than 8000 bytes
    # of bytecode: it runs interpreted, at about twice the CPU. It is ~7000 bytes now (it was
    # 12000 when fields were typed twice and the line's facts were checked here too); hence
    # also one validation for both addresses (`forall`). Adding work below can cross the limit.
    def field(name: str) -> Column:
        return F.col("r").getField(name)

    protocol = F.upper(F.trim(field("Protocol")))
    protocol = F.coalesce(
        F.create_map(*[F.lit(x) for kv in PROTOCOL_NUMBERS.items() for x in kv])[protocol], protocol
    )
    typed = parsed.select(
        "value",
        "source_file",
        "folder_day",
        "folder_hour",
        "own_folder",
        "_blank",
        "_duplicate_key",
        "unknown_columns",
        (field(CORRUPT_COLUMN).isNotNull() | ~F.col("_single")).alias("_malformed"),
        _present(field("TimeGenerated")).alias("_has_timestamp"),
        _timestamp(field("TimeGenerated")).alias("TimeGenerated"),
        (_present(field("SourceIP")) & _present(field("DestinationIP"))).alias("_has_ips"),
        F.lower(F.trim(field("SourceIP"))).alias("SourceIP"),
        F.lower(F.trim(field("DestinationIP"))).alias("DestinationIP"),
        _present(field("SourcePort")).alias("_has_source_port"),
        _whole_number(field("SourcePort"), 0, 65535).alias("SourcePort"),
        _present(field("DestinationPort")).alias("_has_destination_port"),
        _whole_number(field("DestinationPort"), 0, 65535).alias("DestinationPort"),
        _present(field("SentBytes")).alias("_has_sent_bytes"),
        _whole_number(field("SentBytes"), 0, 2**62).alias("SentBytes"),
        _present(field("ReceivedBytes")).alias("_has_received_bytes"),
        _whole_number(field("ReceivedBytes"), 0, 2**62).alias("ReceivedBytes"),
        protocol.alias("Protocol"),
        F.trim(field("DeviceVendor")).alias("DeviceVendor"),
        F.trim(field("DeviceProduct")).alias("DeviceProduct"),
        F.trim(field("DeviceAction")).alias("DeviceAction"),
        F.lower(F.trim(field("DestinationHostName"))).alias("DestinationHostName"),
        _present(field("StartTime")).alias("_has_start"),
        try_cast(F.trim(field("StartTime")), "timestamp").alias("StartTime"),
        _present(field("EndTime")).alias("_has_end"),
        try_cast(F.trim(field("EndTime")), "timestamp").alias("EndTime"),
    )

    def bad(has: str, typed_value: str) -> Column:
        return F.col(has) & F.col(typed_value).isNull()

    typing_reason = (
        F.when(F.col("_malformed"), "malformed_json")
        .when(F.col("_duplicate_key"), "duplicate_key")
        .when(~F.col("_has_timestamp"), "missing_timestamp")
        .when(F.col("TimeGenerated").isNull(), "bad_timestamp")
        .when(~F.col("_has_ips"), "missing_ip")
        .when(~F.forall(F.array("SourceIP", "DestinationIP"), _ip_ok), "bad_ip")
        .when(
            bad("_has_source_port", "SourcePort") | bad("_has_destination_port", "DestinationPort"),
            "bad_port",
        )
        .when(
            bad("_has_sent_bytes", "SentBytes") | bad("_has_received_bytes", "ReceivedBytes"),
            "bad_bytes",
        )
        .when(
            bad("_has_start", "StartTime")
            | bad("_has_end", "EndTime")
            | (F.col("EndTime") < F.col("StartTime")),
            "bad_time_range",
        )
    )
    event_day = F.to_date("TimeGenerated")
    # A record may sit in its own day's folders or, late, in the next day's first 12 hours.
    belongs_to = F.when(event_day == F.col("folder_day"), event_day).when(
        (event_day == F.date_sub(F.col("folder_day"), 1)) & (F.col("folder_hour") < 12), event_day
    )
    day_strings = [d.isoformat() for d in days]
    vendor_ok = (
        F.coalesce(F.col("DeviceVendor").isin(list(device_vendors)), F.lit(False))
        if device_vendors
        else F.lit(True)
    )
    reason = F.coalesce(
        F.col("typing_reason"),
        F.when(F.col("target").isNull(), F.lit("timestamp_outside_folder_day")),
    )
    status = (
        F.when(F.col("_blank"), "blank")
        .when(
            F.col("reason").isNotNull(),
            F.when(F.col("own_folder"), "quarantined").otherwise("other_day"),
        )
        .when(~F.col("target").isin(day_strings), "other_day")
        .when(~vendor_ok, "vendor_filtered")
        .otherwise("kept")
    )
    return (
        typed.withColumn("typing_reason", typing_reason)
        .withColumn("target", F.date_format(belongs_to, "yyyy-MM-dd"))
        .withColumn("reason", reason)
        .withColumn("status", status)
        .select(
            # The raw line is kept only where it is needed (quarantine): the frame is cached.
            F.when(F.col("status") == "quarantined", F.col("value")).alias("value"),
            F.when(F.col("status") == "quarantined", F.col("source_file")).alias("source_file"),
            "status",
            F.when(F.col("status") == "quarantined", F.col("reason")).alias("reason"),
            F.when(F.col("status").isin("kept", "vendor_filtered"), F.col("target"))
            .otherwise(F.date_format("folder_day", "yyyy-MM-dd"))
            .alias("date"),
            F.coalesce(F.col("folder_day") != F.to_date("target"), F.lit(False)).alias(
                "late_arrival"
            ),
            "unknown_columns",
            "TimeGenerated",
            "SourceIP",
            F.col("SourcePort").cast("int").alias("SourcePort"),
            "DestinationIP",
            F.col("DestinationPort").cast("int").alias("DestinationPort"),
            "Protocol",
            "SentBytes",
            "ReceivedBytes",
            "DeviceVendor",
            "DeviceProduct",
            "DeviceAction",
            "DestinationHostName",
            "StartTime",
            "EndTime",
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
        raw = spark.read.text([lake_spark.spark_url(u) for u in blob_urls]).select(
            "value", source_file.alias("source_file")
        )
    lake = Lake(lake_url)
    classified = _classify(raw, days, device_vendors, uuid.uuid4().hex).cache()
    try:
        tallies = classified.groupBy("date", "status", "reason", "late_arrival").count().collect()
        drift = _unknown_columns(classified)
        # The rows of each day are counted while they are written (an observation: no second
        # pass, no cache of the sessions). A day has rows exactly when it has kept records,
        # which is what replacing the days needs to know before the write.
        counted = Observation()
        sessions = _deduplicated(classified.filter(F.col("status") == "kept")).observe(
            counted,
            F.count(F.lit(1)).alias("rows"),  # (an observation needs one metric at least)
            *[F.count_if(F.col("date") == d.isoformat()).alias(d.isoformat()) for d in days],
        )
        kept_per_day: dict[str, int] = defaultdict(int)
        for row in tallies:
            if row["status"] == "kept":
                kept_per_day[row["date"]] += row["count"]
        lake_spark.replace_days(sessions, lake, TABLE, days, kept_per_day)
        rows_per_day = {d.isoformat(): counted.get[d.isoformat()] for d in days}
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
        lake_spark.replace_days(quarantine, lake, QUARANTINE_TABLE, days, quarantined_per_day)
    finally:
        classified.unpersist()

    report = _day_report(days, tallies, rows_per_day, drift)
    for day in days:
        lake.write_manifest(TABLE, day, report[day.isoformat()])
        lake.write_manifest(QUARANTINE_TABLE, day, {"rows": report[day.isoformat()]["quarantined"]})
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
