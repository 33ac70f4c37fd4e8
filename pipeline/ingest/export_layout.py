"""The Log Analytics data-export layout: where a day's blobs live and how to find them.

Export writes `WorkspaceResourceId=/subscriptions/…/workspaces/{ws}/y=YYYY/m=MM/d=DD/h=HH/m=MM/`
folders holding `PT05M.json` (5-minute layout, since ~2022) or `PT1H.json` (hourly layout, 2021),
continued in `PT05M_1.json`, `_2`, … once a blob reaches 50,000 appends. We list folders and
match names; we never guess a file name.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from pipeline.azure import storage

WORKSPACE_ROOT = "WorkspaceResourceId="
WORKSPACE_GLOB = (
    WORKSPACE_ROOT + "/subscriptions/*/resourcegroups/*/providers/"
    "microsoft.operationalinsights/workspaces/*"
)
BLOB_NAME = re.compile(r"^PT(05M|1H)(_\d+)?\.json$")
FOLDER_TIME = re.compile(r"/y=(\d{4})/m=(\d{2})/d=(\d{2})/h=(\d{2})/m=(\d{2})/")
# A day is complete only ~12 h after it ends: its late records sit in the next day's early folders.
LATE_ARRIVAL_HOURS = 12


@dataclass(frozen=True)
class ExportBlob:
    url: str
    size: int
    day: dt.date  # the day of the folder, not of the records inside
    hour: int


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for a local path or abfss:// / az:// URL (with its credentials,
    pipeline/azure/storage.py), and the path within it."""
    fs, path = storage.filesystem(url)
    return fs, path.rstrip("/")


def workspace_path(resource_id: str) -> str:
    """`/subscriptions/…/workspaces/ws` → the folder the export writes for that workspace."""
    return WORKSPACE_ROOT + "/" + resource_id.strip("/").lower()


def day_folder(workspace: str, day: dt.date) -> str:
    return f"{workspace}/y={day:%Y}/m={day:%m}/d={day:%d}"


def hour_folder(workspace: str, day: dt.date, hour: int, minute: int) -> str:
    return f"{day_folder(workspace, day)}/h={hour:02d}/m={minute:02d}"


def _url_of(export_url: str, fs: AbstractFileSystem, path: str) -> str:
    """A listed path as a URL readers accept: a local path, or a remote URL in the export root's
    own form (abfss://container@account…/…), which names the account for Spark on a cluster."""
    return path if isinstance(fs, LocalFileSystem) else storage.url_in(export_url, path)


def _workspace_folders(fs: AbstractFileSystem, root: str) -> list[str]:
    """Every workspace folder under the export root, one delimited listing per level.

    Globbing WORKSPACE_GLOB directly would make a blob store list every blob of the container
    (the glob's prefix stops at the first `*`), years of exports, for each day read.
    """
    folders = [f"{root}/{WORKSPACE_ROOT}"]
    for level in WORKSPACE_GLOB[len(WORKSPACE_ROOT) :].strip("/").split("/"):
        below = []
        for folder in folders:
            if level != "*":
                below.append(f"{folder}/{level}")
                continue
            try:
                entries = fs.ls(folder, detail=True)
            except FileNotFoundError:
                continue
            below.extend(e["name"].rstrip("/") for e in entries if e["type"] == "directory")
        folders = below
    return sorted(folders)


def list_day_blobs(
    export_url: str,
    day: dt.date,
    workspace_resource_id: str | None = None,
    hours: range = range(24),
) -> list[ExportBlob]:
    """Every export blob in the day's folders (all workspaces unless one is named)."""
    fs, root = filesystem(export_url)
    if workspace_resource_id:
        workspaces = [f"{root}/{workspace_path(workspace_resource_id)}"]
    else:
        workspaces = _workspace_folders(fs, root)
    found: dict[str, dict] = {}
    for workspace in workspaces:
        found.update(fs.glob(f"{day_folder(workspace, day)}/h=*/m=*/*.json", detail=True))
    blobs = []
    for path, info in sorted(found.items()):
        match = FOLDER_TIME.search(path)
        if not match or not BLOB_NAME.match(path.rsplit("/", 1)[-1]):
            continue
        hour = int(match.group(4))
        if hour in hours:
            url = _url_of(export_url, fs, path)
            blobs.append(ExportBlob(url, int(info.get("size") or 0), day, hour))
    return blobs


def blobs_for_days(
    export_url: str,
    days: list[dt.date],
    workspace_resource_id: str | None = None,
) -> tuple[dict[dt.date, list[ExportBlob]], list[ExportBlob]]:
    """The blobs of each day, plus the next day's first 12 hours where that day's late records land.

    Returns (blobs per requested day, late-arrival blobs after the last requested day).
    """
    per_day = {day: list_day_blobs(export_url, day, workspace_resource_id) for day in days}
    after = max(days) + dt.timedelta(days=1)
    late = list_day_blobs(export_url, after, workspace_resource_id, hours=range(LATE_ARRIVAL_HOURS))
    return per_day, late


def chunks(days: list[dt.date], size: int) -> list[list[dt.date]]:
    """Consecutive runs of at most `size` days, in order."""
    return [days[i : i + size] for i in range(0, len(days), size)]


def urls_for_chunk(
    chunk: list[dt.date], per_day: dict[dt.date, list[ExportBlob]], late: list[ExportBlob]
) -> list[str]:
    """The blobs one pass over `chunk` reads: its days' blobs, and the first hours of the day
    after it (late records), taken from the listing already made for the whole run."""
    after = max(chunk) + dt.timedelta(days=1)
    following = (
        [b for b in per_day[after] if b.hour < LATE_ARRIVAL_HOURS] if after in per_day else late
    )
    return [b.url for d in chunk for b in per_day[d]] + [b.url for b in following]


def describe_expected(export_url: str, day: dt.date, workspace_resource_id: str | None) -> str:
    workspace = workspace_path(workspace_resource_id) if workspace_resource_id else WORKSPACE_GLOB
    folder = f"{export_url.rstrip('/')}/{day_folder(workspace, day)}"
    return f"{folder}/h=HH/m=MM/PT05M*.json or PT1H*.json"


def layout_of(url: str) -> str:
    """`PT05M` (5-minute folders) or `PT1H` (hourly folders), from a blob's name."""
    match = BLOB_NAME.match(url.rsplit("/", 1)[-1])
    return f"PT{match.group(1)}" if match else "unknown"
