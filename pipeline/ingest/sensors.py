"""The late-export sensor: export days that change after they were read are run again.

Log Analytics export retries for up to 12 hours, and an export outage can be
replayed days later, so a day's folders can change after the day was materialized. When
`network_sessions` reads a day it records a fingerprint of the blobs it read (the day's folders
plus the next day's first 12 hours): file count, total bytes, newest modification time. The
sensor recomputes the fingerprint of recent days and requests a re-run of every day whose
folders changed since. The run key contains the new fingerprint, so a change is requested once
however many ticks see it; the cursor remembers what was requested.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import dagster as dg

from pipeline.ingest import export_layout
from pipeline.lake import Lake
from pipeline.settings import Settings

FINGERPRINT_TABLE = "export_fingerprint"
# Days before yesterday the late-export sensor looks at (a replayed outage older than this needs
# a backfill by hand).
LATE_EXPORT_SCAN_DAYS = 14
LATE_EXPORT_INTERVAL_S = 15 * 60


@dataclass(frozen=True)
class ExportFingerprint:
    files: int
    bytes: int
    newest_mtime: float  # epoch seconds

    @property
    def signature(self) -> str:
        return f"{self.files}-{self.bytes}-{int(self.newest_mtime)}"


def _mtime(info: dict[str, Any]) -> float:
    value = info.get("mtime", info.get("last_modified", info.get("LastModified", 0)))
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return float(value or 0)


def export_fingerprint(
    export_url: str, day: dt.date, workspace_resource_id: str | None = None
) -> ExportFingerprint:
    """What network_sessions reads for `day`: its folders and the next day's first 12 hours."""
    fs, root = export_layout.filesystem(export_url)
    workspace = (
        export_layout.workspace_path(workspace_resource_id)
        if workspace_resource_id
        else export_layout.WORKSPACE_GLOB
    )
    files, size, newest = 0, 0, 0.0
    next_day = day + dt.timedelta(days=1)
    for folder_day, hours in (
        (day, range(24)),
        (next_day, range(export_layout.LATE_ARRIVAL_HOURS)),
    ):
        pattern = f"{root}/{export_layout.day_folder(workspace, folder_day)}/h=*/m=*/*.json"
        for path, info in fs.glob(pattern, detail=True).items():
            match = export_layout.FOLDER_TIME.search(path)
            name = path.rsplit("/", 1)[-1]
            if not match or not export_layout.BLOB_NAME.match(name):
                continue
            if int(match.group(4)) not in hours:
                continue
            files += 1
            size += int(info.get("size") or 0)
            newest = max(newest, _mtime(info))
    return ExportFingerprint(files, size, newest)


def record_fingerprints(lake_url: str, fingerprints: dict[dt.date, ExportFingerprint]) -> None:
    """Remember what each day's run read (called by network_sessions after it wrote the day)."""
    for day, fingerprint in fingerprints.items():
        Lake(lake_url).write_manifest(FINGERPRINT_TABLE, day, asdict(fingerprint))


def recorded_fingerprint(lake_url: str, day: dt.date) -> ExportFingerprint | None:
    facts = Lake(lake_url).read_manifest(FINGERPRINT_TABLE, day)
    if facts is None:
        return None
    return ExportFingerprint(int(facts["files"]), int(facts["bytes"]), float(facts["newest_mtime"]))


@dataclass(frozen=True)
class LateDay:
    day: dt.date
    recorded: ExportFingerprint
    current: ExportFingerprint

    def describe(self) -> str:
        return (
            f"{self.day}: export folders changed since the day was materialized "
            f"(files {self.recorded.files} → {self.current.files}, "
            f"bytes {self.recorded.bytes} → {self.current.bytes})"
        )


def late_days(settings: Settings, days: Iterable[dt.date]) -> list[LateDay]:
    """Materialized days whose export folders no longer match what their run read."""
    late = []
    for day in days:
        recorded = recorded_fingerprint(settings.lake_url, day)
        if recorded is None:
            continue  # never materialized: the schedule or a backfill will get to it
        current = export_fingerprint(settings.export_url, day, settings.workspace_resource_id)
        if current != recorded:
            late.append(LateDay(day, recorded, current))
    return late


def days_to_scan(settings: Settings, today: dt.date) -> list[dt.date]:
    yesterday = today - dt.timedelta(days=1)
    first = max(settings.start_date, yesterday - dt.timedelta(days=LATE_EXPORT_SCAN_DAYS - 1))
    return [first + dt.timedelta(days=i) for i in range((yesterday - first).days + 1)]


def late_export_requests(
    settings: Settings, cursor: str | None, today: dt.date
) -> tuple[list[dg.RunRequest], str, list[str]]:
    """The re-runs to request, the new cursor, and a line per late day (plain, testable)."""
    requested: dict[str, str] = json.loads(cursor) if cursor else {}
    days = days_to_scan(settings, today)
    requests, lines = [], []
    for late in late_days(settings, days):
        key = late.day.isoformat()
        signature = late.current.signature
        lines.append(late.describe())
        if requested.get(key) == signature:
            continue
        requested[key] = signature
        requests.append(
            dg.RunRequest(
                run_key=f"late-export:{key}:{signature}",
                partition_key=key,
                tags={"beacon/trigger": "late_export"},
            )
        )
    scanned = {d.isoformat() for d in days}
    kept = {k: v for k, v in sorted(requested.items()) if k in scanned}
    return requests, json.dumps(kept, sort_keys=True), lines


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def build_late_export_sensor(
    settings: Settings,
    job: dg.UnresolvedAssetJobDefinition,
    today: Callable[[], dt.date] = utc_today,
) -> dg.SensorDefinition:
    """`today` is the clock the scan window counts back from (tests pass a fixed day)."""

    @dg.sensor(
        name="late_export_sensor",
        job=job,
        minimum_interval_seconds=LATE_EXPORT_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Re-runs a day when its export folders (or the next day's first 12 hours) changed "
            f"after it was materialized; looks at the last {LATE_EXPORT_SCAN_DAYS} days."
        ),
    )
    def late_export_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult | dg.SkipReason:
        if settings.source == "sample":
            return dg.SkipReason("BEACON_SOURCE=sample: generated days never arrive late")
        requests, cursor, lines = late_export_requests(settings, context.cursor, today())
        for line in lines:
            context.log.info(line)
        if not requests:
            return dg.SensorResult(
                skip_reason=dg.SkipReason("no export day changed after it was materialized"),
                cursor=cursor,
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return late_export_sensor
