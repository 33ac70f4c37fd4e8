"""Query mode: pull a CommonSecurityLog day from Log Analytics and write it in the export layout.

So that everything downstream reads one format, a pulled day lands under BEACON_EXPORT_URL
exactly as data export would have written it: `WorkspaceResourceId=/…/y=/m=/d=/h=/m=/PT05M.json`
JSON lines, columns named as in CommonSecurityLog, TimeGenerated ISO 8601 with 7 digits and Z,
a 5-minute folder per record's TimeGenerated (so every record sits in its own day's folders),
`PT05M_1.json`, `_2`, … past 50,000 lines, as export continues a blob.

The workspace folder is BEACON_WORKSPACE_RESOURCE_ID when set; otherwise a stable stand-in
derived from the Workspace ID GUID (the query API needs only the GUID, the layout wants a
resource id): `/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/
log-analytics-query/providers/microsoft.operationalinsights/workspaces/{GUID}`.

A day is written to `_query_staging/` beside the export folders and moved into place only when
every slice of it has arrived: a failed pull leaves the previous version of the day (or none),
never part of one.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from azure.monitor.query import LogsTable

from pipeline.azure.log import Log
from pipeline.azure.log_analytics import LogAnalytics, LogAnalyticsError, kql_string
from pipeline.ingest import export_layout
from pipeline.lake.schemas import EXPORT_COLUMNS
from pipeline.settings import Settings

TABLE = "CommonSecurityLog"
STAGING_FOLDER = "_query_staging"
FOLDER_MINUTES = 5
BLOB_STEM = "PT05M"
# Data export starts a new blob (`_1`, `_2`, …) after 50,000 appends; so do we.
MAX_LINES_PER_BLOB = 50_000
STAND_IN_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
STAND_IN_RESOURCE_GROUP = "log-analytics-query"


def export_workspace_resource_id(settings: Settings) -> str:
    """The workspace resource id whose folder a pulled day is written under (module docstring)."""
    if settings.workspace_resource_id:
        return settings.workspace_resource_id
    if not settings.log_analytics_workspace_id:
        raise ValueError("LOG_ANALYTICS_WORKSPACE_ID is not set")
    return (
        f"/subscriptions/{STAND_IN_SUBSCRIPTION}/resourcegroups/{STAND_IN_RESOURCE_GROUP}/"
        "providers/microsoft.operationalinsights/workspaces/"
        f"{settings.log_analytics_workspace_id}"
    )


def base_query(device_vendors: tuple[str, ...]) -> str:
    """CommonSecurityLog, filtered to BEACON_DEVICE_VENDORS at the source when that is set."""
    if not device_vendors:
        return TABLE
    return f"{TABLE} | where DeviceVendor in ({', '.join(kql_string(v) for v in device_vendors)})"


@dataclass
class PulledDay:
    """What pulling one day took and wrote."""

    date: str
    rows: int
    counted: int
    slices: int
    halvings: int
    throttled: int
    server_errors: int
    queries: int
    files: int
    bytes: int
    seconds: float

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__, seconds=round(self.seconds, 1))


class StagedDay:
    """The day's blobs, written aside and moved into the export layout in one step."""

    def __init__(self, export_url: str, workspace_resource_id: str, day: dt.date) -> None:
        self.fs, self.root = export_layout.filesystem(export_url)
        self.day = day
        self.day_folder = export_layout.day_folder(
            export_layout.workspace_path(workspace_resource_id), day
        )
        self.stage = f"{self.root}/{STAGING_FOLDER}/{day.isoformat()}-{uuid.uuid4().hex[:12]}"
        self.next_part: dict[str, int] = defaultdict(int)
        self.files = 0
        self.bytes = 0

    def write(self, table: LogsTable) -> None:
        """Append one slice's rows as blobs in their 5-minute folders."""
        names = list(table.columns)
        if "TimeGenerated" not in names:
            raise LogAnalyticsError("Log Analytics answered without a TimeGenerated column")
        when = names.index("TimeGenerated")
        lines: dict[str, list[str]] = defaultdict(list)
        for row in table.rows:
            values = [row[i] for i in range(len(names))]
            stamp = _utc(values[when])
            if stamp.date() != self.day:
                raise LogAnalyticsError(
                    f"Log Analytics returned a record of {stamp.isoformat()} for {self.day}"
                )
            record = {name: _json_value(value) for name, value in zip(names, values, strict=True)}
            minute = stamp.minute - stamp.minute % FOLDER_MINUTES
            lines[f"h={stamp.hour:02d}/m={minute:02d}"].append(
                json.dumps(record, separators=(",", ":"), ensure_ascii=False)
            )
        for folder, folder_lines in sorted(lines.items()):
            for first in range(0, len(folder_lines), MAX_LINES_PER_BLOB):
                part = self.next_part[folder]
                self.next_part[folder] += 1
                name = f"{BLOB_STEM}.json" if part == 0 else f"{BLOB_STEM}_{part}.json"
                data = "".join(
                    line + "\n" for line in folder_lines[first : first + MAX_LINES_PER_BLOB]
                ).encode()
                directory = f"{self.stage}/{self.day_folder}/{folder}"
                self.fs.makedirs(directory, exist_ok=True)
                with self.fs.open(f"{directory}/{name}", "wb") as handle:
                    handle.write(data)
                self.files += 1
                self.bytes += len(data)

    def commit(self) -> None:
        """Replace the day's folders with the staged ones."""
        target = f"{self.root}/{self.day_folder}"
        staged = f"{self.stage}/{self.day_folder}"
        previous = f"{self.stage}-previous"
        had_previous = self.fs.exists(target)
        if had_previous:
            self.fs.mv(target, previous, recursive=True)
        try:
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(staged, target, recursive=True)
        except Exception:
            if had_previous and not self.fs.exists(target):
                self.fs.mv(previous, target, recursive=True)
            raise
        if had_previous:
            self.fs.rm(previous, recursive=True)

    def discard(self) -> None:
        """Remove whatever is left in staging (all of it after a failure)."""
        if self.fs.exists(self.stage):
            self.fs.rm(self.stage, recursive=True)


def pull_day(
    settings: Settings, day: dt.date, log: Log, client: LogAnalytics | None = None
) -> PulledDay:
    """Pull `day` from the workspace into the export layout; all of it or nothing."""
    if not settings.log_analytics_workspace_id:
        raise ValueError("BEACON_SOURCE=query needs LOG_ANALYTICS_WORKSPACE_ID")
    started = time.monotonic()
    staged = StagedDay(settings.export_url, export_workspace_resource_id(settings), day)
    la = client or LogAnalytics(
        settings.log_analytics_workspace_id, settings.log_analytics_endpoint
    )
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    try:
        stats = la.pull(
            base_query(settings.device_vendors),
            EXPORT_COLUMNS,
            start,
            start + dt.timedelta(days=1),
            settings.query_max_rows_per_slice,
            staged.write,
            log,
        )
        vendors = ", ".join(settings.device_vendors) or "any"
        if stats.rows == 0:
            raise LogAnalyticsError(
                f"workspace {settings.log_analytics_workspace_id} has no {TABLE} rows on {day} "
                f"(DeviceVendor: {vendors}): check LOG_ANALYTICS_WORKSPACE_ID and "
                "BEACON_DEVICE_VENDORS, and that the firewall connector was sending that day"
            )
        if stats.rows < stats.counted:
            raise LogAnalyticsError(
                f"{day}: pulled {stats.rows} rows but counted {stats.counted} first; rows "
                "vanished in between (retention purge?). The day was not written; run it again."
            )
        staged.commit()
    finally:
        staged.discard()
        if client is None:
            la.close()
    pulled = PulledDay(
        date=day.isoformat(),
        rows=stats.rows,
        counted=stats.counted,
        slices=stats.slices,
        halvings=stats.halvings,
        throttled=stats.throttled,
        server_errors=stats.server_errors,
        queries=stats.queries,
        files=staged.files,
        bytes=staged.bytes,
        seconds=time.monotonic() - started,
    )
    log.info(
        f"query mode: {day}: {pulled.rows} rows in {pulled.slices} slice(s), "
        f"{pulled.halvings} halving(s), {pulled.throttled + pulled.server_errors} retried "
        f"answer(s), {pulled.files} blobs, {pulled.seconds:.1f} s"
    )
    return pulled


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    raise LogAnalyticsError(f"Log Analytics returned TimeGenerated {value!r}, not a datetime")


def _json_value(value: Any) -> Any:
    """A value as data export writes it: datetimes ISO 8601 with 7 fractional digits and Z."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    return value
