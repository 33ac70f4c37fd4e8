"""One bench step: per-pair interval statistics over raw export JSON in DuckDB, the yardstick.

What a single-machine engine does with the same cores: read the window's JSON lines, and per
(source, destination, port, protocol) compute the connection count and the quartiles, median,
mean and spread of the gaps between connections — the inputs of the timing score.
"""

from __future__ import annotations

import time

import duckdb

from pipeline.ingest import export_layout
from pipeline.settings import load_settings
from tools.bench.measure import report, window_from_args

COLUMNS = {
    "TimeGenerated": "TIMESTAMP",
    "SourceIP": "VARCHAR",
    "DestinationIP": "VARCHAR",
    "DestinationPort": "BIGINT",
    "Protocol": "VARCHAR",
    "SentBytes": "BIGINT",
    "ReceivedBytes": "BIGINT",
}
QUERY = """
WITH events AS (
  SELECT SourceIP, DestinationIP, DestinationPort, Protocol, TimeGenerated,
         epoch(TimeGenerated) - lag(epoch(TimeGenerated)) OVER (
           PARTITION BY SourceIP, DestinationIP, DestinationPort, Protocol
           ORDER BY TimeGenerated) AS gap
  FROM read_json({files}, format = 'newline_delimited', columns = {columns},
                 ignore_errors = true)
)
SELECT SourceIP, DestinationIP, DestinationPort, Protocol,
       count(*) AS connections,
       quantile_cont(gap, [0.25, 0.5, 0.75]) AS gap_quartiles,
       avg(gap) AS gap_mean, stddev_pop(gap) AS gap_stddev
FROM events GROUP BY ALL
"""


def main() -> None:
    days = window_from_args()
    settings = load_settings()
    started = time.monotonic()
    per_day, _ = export_layout.blobs_for_days(
        settings.export_url, days, settings.workspace_resource_id
    )
    files = [b.url for d in days for b in per_day[d]]
    listing_seconds = time.monotonic() - started
    connection = duckdb.connect()
    connection.execute("SET threads = 2")
    started = time.monotonic()
    pairs = connection.execute(QUERY.format(files=repr(files), columns=repr(COLUMNS))).fetchall()
    report(
        {
            "listing_seconds": round(listing_seconds, 2),
            "run_seconds": round(time.monotonic() - started, 2),
            "files": len(files),
            "pairs": len(pairs),
        }
    )


if __name__ == "__main__":
    main()
