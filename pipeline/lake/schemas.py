"""Explicit schemas of every lake table: no stage ever infers a schema."""

from __future__ import annotations

from pyspark.sql import types as T

# The CommonSecurityLog columns we read from the export. Every one is read as a string and typed
# by us, so a wrong type in one field (`"SentBytes": "abc"`) quarantines one record instead of
# silently nulling the whole row.
EXPORT_COLUMNS: tuple[str, ...] = (
    "TimeGenerated",
    "DeviceVendor",
    "DeviceProduct",
    "DeviceAction",
    "SourceIP",
    "SourcePort",
    "DestinationIP",
    "DestinationPort",
    "DestinationHostName",
    "Protocol",
    "SentBytes",
    "ReceivedBytes",
    "StartTime",
    "EndTime",
)
CORRUPT_COLUMN = "_corrupt_record"
EXPORT_RECORD = T.StructType(
    [T.StructField(name, T.StringType()) for name in EXPORT_COLUMNS]
    + [T.StructField(CORRUPT_COLUMN, T.StringType())]
)

NETWORK_SESSIONS = T.StructType(
    [
        T.StructField("TimeGenerated", T.TimestampType(), False),
        T.StructField("SourceIP", T.StringType(), False),
        T.StructField("SourcePort", T.IntegerType()),
        T.StructField("DestinationIP", T.StringType(), False),
        T.StructField("DestinationPort", T.IntegerType()),
        T.StructField("Protocol", T.StringType()),
        T.StructField("SentBytes", T.LongType()),
        T.StructField("ReceivedBytes", T.LongType()),
        T.StructField("DeviceVendor", T.StringType()),
        T.StructField("DeviceProduct", T.StringType()),
        T.StructField("DeviceAction", T.StringType()),
        T.StructField("DestinationHostName", T.StringType()),
        # When the firewall logs the session's span (one record at its end): long connections.
        T.StructField("StartTime", T.TimestampType()),
        T.StructField("EndTime", T.TimestampType()),
        T.StructField("workspace", T.StringType()),
        T.StructField("date", T.StringType()),
    ]
)

PAIR_KEY: tuple[str, ...] = ("SourceIP", "DestinationIP", "DestinationPort", "Protocol")

# One row per pair per day. The three arrays are aligned and sorted by time; they are the
# compact record that lets a 21-day window be scored from 21 summaries instead of raw events.
# They are null for strobes (more connections a day than are worth keeping one by one).
PAIR_DAILY_STATS = T.StructType(
    [
        T.StructField("SourceIP", T.StringType(), False),
        T.StructField("DestinationIP", T.StringType(), False),
        T.StructField("DestinationPort", T.IntegerType()),
        T.StructField("Protocol", T.StringType()),
        T.StructField("connections", T.LongType(), False),
        T.StructField("first_seen", T.TimestampType()),
        T.StructField("last_seen", T.TimestampType()),
        T.StructField("sent_bytes_total", T.LongType()),
        T.StructField("received_bytes_total", T.LongType()),
        T.StructField("event_ms", T.ArrayType(T.IntegerType())),  # ms since the day's midnight
        T.StructField("sent_bytes", T.ArrayType(T.LongType())),  # -1 where unknown
        T.StructField("received_bytes", T.ArrayType(T.LongType())),
        T.StructField("is_strobe", T.BooleanType(), False),
        T.StructField("device_vendor", T.StringType()),
        T.StructField("destination_hostname", T.StringType()),
        T.StructField("longest_connection_s", T.DoubleType()),  # EndTime - StartTime, max
        T.StructField("date", T.StringType()),
    ]
)

BEACONING_CANDIDATES = T.StructType(
    [
        T.StructField("SourceIP", T.StringType(), False),
        T.StructField("DestinationIP", T.StringType(), False),
        T.StructField("DestinationPort", T.IntegerType()),
        T.StructField("Protocol", T.StringType()),
        T.StructField("kind", T.StringType(), False),  # beacon | strobe | long_connection
        T.StructField("score", T.DoubleType(), False),
        T.StructField("connections", T.LongType(), False),
        T.StructField("median_interval_s", T.DoubleType()),
        T.StructField("interval_mad_s", T.DoubleType()),
        T.StructField("timing_score", T.DoubleType()),
        T.StructField("size_score", T.DoubleType()),
        T.StructField("histogram_score", T.DoubleType()),
        T.StructField("duration_score", T.DoubleType()),
        T.StructField("percent_beacon", T.DoubleType()),
        T.StructField("hours_active_ratio", T.DoubleType()),
        T.StructField("intervals", T.LongType()),  # of the scored view
        T.StructField("beyond_chance", T.BooleanType()),  # more regular than random arrivals
        T.StructField("days_seen", T.IntegerType()),
        T.StructField("first_seen", T.TimestampType()),
        T.StructField("last_seen", T.TimestampType()),
        T.StructField("first_seen_age_days", T.IntegerType()),
        T.StructField("destination_age_days", T.IntegerType()),
        T.StructField("new_destination", T.BooleanType()),
        T.StructField("periodic_sources_to_destination", T.LongType()),
        T.StructField("internal_sources_to_destination", T.LongType()),
        T.StructField("internal_sources", T.LongType()),
        T.StructField("prevalence", T.DoubleType()),
        T.StructField("sent_bytes_total", T.LongType()),
        T.StructField("received_bytes_total", T.LongType()),
        T.StructField("device_vendor", T.StringType()),
        T.StructField("destination_hostname", T.StringType()),
        # Every address of the pair: one, or all the IPs a beacon scored by its host name used.
        T.StructField("destination_ips", T.ArrayType(T.StringType())),
        T.StructField("longest_connection_s", T.DoubleType()),
        T.StructField("interval_histogram", T.ArrayType(T.LongType())),
        T.StructField("reasons", T.StringType(), False),
        T.StructField("window_start", T.StringType(), False),
        T.StructField("window_days_present", T.IntegerType(), False),
        T.StructField("date", T.StringType()),
    ]
)
