"""The export schema drift check, a plain function behind the blocking check of network_sessions.

The export is JSON Lines without a schema, so a renamed or retyped column does not
fail a read; it turns every record into a quarantined one, or worse, into nulls. The drift check
samples the first records of a few blobs per day and compares their keys and value types with
the columns the pipeline needs, before a day's numbers are trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.ingest import export_layout
from pipeline.lake.schemas import EXPORT_COLUMNS

# Without these a record cannot become a session (it would be quarantined).
REQUIRED_COLUMNS: dict[str, tuple[type, ...]] = {
    "TimeGenerated": (str,),
    "SourceIP": (str,),
    "DestinationIP": (str,),
    "DestinationPort": (int, str),
}
BLOBS_SAMPLED_PER_DAY = 6
LINES_SAMPLED_PER_BLOB = 5


def _sample(urls: Sequence[str], count: int) -> list[str]:
    if len(urls) <= count:
        return list(urls)
    step = (len(urls) - 1) / (count - 1)
    return [urls[round(i * step)] for i in range(count)]


def _first_records(url: str, lines: int) -> list[dict[str, Any]]:
    fs, path = export_layout.filesystem(url)
    records = []
    with fs.open(path, "r", encoding="utf-8", errors="replace") as handle:
        for _, line in zip(range(lines), handle, strict=False):
            try:
                value = json.loads(line)
            except ValueError:
                continue  # a malformed line is the quarantine's business, not drift
            if isinstance(value, dict):
                records.append(value)
    return records


def export_schema_drift(blob_urls_per_day: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Sample each day's blobs; report required columns missing or of the wrong JSON type.

    Returns `{"drifted_days": {day: [problems]}, "new_columns": [...], "records_sampled": n}`;
    columns the pipeline does not read are listed as `new_columns` and are not a failure.
    """
    drifted: dict[str, list[str]] = {}
    known = set(EXPORT_COLUMNS) | {"Type", "TenantId", "_ResourceId", "SourceSystem"}
    new_columns: set[str] = set()
    sampled = 0
    for day, urls in sorted(blob_urls_per_day.items()):
        problems: set[str] = set()
        for url in _sample(sorted(urls), BLOBS_SAMPLED_PER_DAY):
            for record in _first_records(url, LINES_SAMPLED_PER_BLOB):
                sampled += 1
                new_columns.update(set(record) - known)
                for column, types in REQUIRED_COLUMNS.items():
                    if column not in record:
                        problems.add(f"{column} missing")
                    elif record[column] is not None and not isinstance(record[column], types):
                        problems.add(f"{column} is {type(record[column]).__name__}")
        if problems:
            drifted[day] = sorted(problems)
    return {
        "drifted_days": drifted,
        "new_columns": sorted(new_columns),
        "records_sampled": sampled,
    }
