"""The lake: where every table, manifest, reference file and picture lives, and the only code
that builds their paths.

Each table is `{lake}/{table}/date=YYYY-MM-DD/` (parquet, or one small file a day). After a
stage commits its days it writes `{lake}/{table}/_manifest/date=YYYY-MM-DD.json` with the day's
counts: a day *exists* for downstream stages when its manifest exists, so a day with zero rows
is not mistaken for a missing one, and a crashed write (no manifest yet) is not mistaken for a
finished one. Reference files (allowlist, indicators, the RDAP cache) live in
`{lake}/reference/`.

Everything here is driver-side Python (fsspec through `pipeline.azure.storage`, pandas, pyarrow), so
assets and enrichment use the lake without importing Spark; Spark's reads and writes of days
are in `pipeline.lake.spark`. Local folders and `abfss://` / `az://` lakes work the same.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import pandas as pd
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from pipeline.azure import storage

REFERENCE = "reference"


def window_days(
    day: dt.date, lookback_days: int, first_day: dt.date | None = None
) -> list[dt.date]:
    """The days of `day`'s lookback window, oldest first, none before `first_day`."""
    start = day - dt.timedelta(days=lookback_days - 1)
    if first_day is not None:
        start = max(start, first_day)
    return [start + dt.timedelta(days=i) for i in range((day - start).days + 1)]


def windows_span(days: Sequence[dt.date], lookback_days: int) -> list[dt.date]:
    """Every day some window of `days` covers: the first window's start to the last day."""
    return window_days(max(days), lookback_days + (max(days) - min(days)).days)


def _write_aside(
    fs: AbstractFileSystem, path: str, write: Callable[[IO[Any]], Any], mode: str = "wb"
) -> None:
    """Write next to `path`, then move into place: readers never see half a file."""
    folder, name = path.rsplit("/", 1)
    fs.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open(tmp, mode, **({"newline": ""} if "b" not in mode else {})) as handle:
        write(handle)
    fs.mv(tmp, path)


@dataclass(frozen=True)
class Lake:
    """One lake, by its URL (a local folder, `abfss://…` or `az://…`)."""

    url: str

    # Paths -------------------------------------------------------------------------------

    def table_url(self, table: str) -> str:
        return f"{self.url.rstrip('/')}/{table}"

    def day_url(self, table: str, day: dt.date) -> str:
        return f"{self.table_url(table)}/date={day.isoformat()}"

    def manifest_url(self, table: str, day: dt.date) -> str:
        return f"{self.table_url(table)}/_manifest/date={day.isoformat()}.json"

    def reference_url(self, name: str) -> str:
        return f"{self.table_url(REFERENCE)}/{name}"

    # Manifests ---------------------------------------------------------------------------

    def write_manifest(self, table: str, day: dt.date, facts: dict[str, Any]) -> None:
        body = json.dumps({"date": day.isoformat(), **facts}, sort_keys=True, default=str)
        fs, path = storage.filesystem(self.manifest_url(table, day))
        _write_aside(fs, path, lambda handle: handle.write(body), mode="w")

    def read_manifest(self, table: str, day: dt.date) -> dict[str, Any] | None:
        fs, path = storage.filesystem(self.manifest_url(table, day))
        if not fs.exists(path):
            return None
        with fs.open(path, "r") as handle:
            return json.load(handle)

    def days_in_table(self, table: str) -> list[dt.date]:
        """Every day whose manifest exists, oldest first (one listing)."""
        fs, path = storage.filesystem(f"{self.table_url(table)}/_manifest")
        if not fs.exists(path):
            return []
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
        return sorted(
            dt.date.fromisoformat(n[len("date=") : -len(".json")])
            for n in names
            if n.startswith("date=") and n.endswith(".json")
        )

    def days_present(self, table: str, days: Iterable[dt.date]) -> list[dt.date]:
        """The days among `days` whose manifest exists (one listing, not one call per day)."""
        have = set(self.days_in_table(table))
        return [d for d in days if d in have]

    def latest_day(self, table: str) -> dt.date | None:
        """The most recent day whose manifest exists (one listing)."""
        days = self.days_in_table(table)
        return days[-1] if days else None

    # Day data ----------------------------------------------------------------------------

    def has_day_data(self, table: str, day: dt.date) -> bool:
        fs, path = storage.filesystem(self.day_url(table, day))
        return fs.exists(path)

    def remove_day_data(self, table: str, day: dt.date) -> None:
        fs, path = storage.filesystem(self.day_url(table, day))
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def read_day(self, table: str, day: str) -> pd.DataFrame:
        """A small per-day table (candidates, enriched) read on the driver with pandas."""
        date = dt.date.fromisoformat(day)
        manifest = self.read_manifest(table, date)
        if manifest is None or manifest.get("rows", 0) == 0:
            return pd.DataFrame()
        # The day lives in the folder name (date=D), not in the files: put it back as a column.
        fs, path = storage.filesystem(self.day_url(table, date))
        return pd.read_parquet(path, filesystem=fs).assign(date=day)

    def read_day_columns(
        self, table: str, day: dt.date, columns: list[str], filters: Any = None
    ) -> pd.DataFrame | None:
        """Some columns of a committed day with rows (pyarrow filters); None otherwise."""
        manifest = self.read_manifest(table, day)
        if manifest is None or manifest.get("rows") == 0:
            return None
        fs, path = storage.filesystem(self.day_url(table, day))
        if not fs.exists(path):
            return None
        return pq.read_table(path, filesystem=fs, columns=columns, filters=filters).to_pandas()

    def write_day_file(self, table: str, day: dt.date, name: str, content: Any) -> str:
        """Replace one small file of a day written from the driver: a frame (as parquet), text
        or bytes. Written aside, then swapped in. Returns its URL."""
        url = f"{self.day_url(table, day)}/{name}"
        fs, path = storage.filesystem(url)
        if isinstance(content, str):
            _write_aside(fs, path, lambda handle: handle.write(content), mode="w")
        elif isinstance(content, bytes):
            _write_aside(fs, path, lambda handle: handle.write(content))
        else:
            table = _readable_by_pandas(content)
            _write_aside(fs, path, lambda handle: pq.write_table(table, handle))
        return url

    # Reference files ---------------------------------------------------------------------

    def read_reference(self, name: str) -> bytes | None:
        """A reference file's bytes; None when there is none."""
        return read_bytes(self.reference_url(name))

    def write_reference(self, name: str, content: bytes) -> None:
        """Replace a reference file (written aside, then moved: a crash never leaves half)."""
        fs, path = storage.filesystem(self.reference_url(name))
        _write_aside(fs, path, lambda handle: handle.write(content))

    # Health ------------------------------------------------------------------------------

    def probe(self) -> str:
        """Write, read back and remove a small file: the lake is usable with these credentials."""
        fs, root = storage.filesystem(self.url)
        probe = f"{root.rstrip('/')}/_doctor/probe-{uuid.uuid4().hex}.txt"
        fs.makedirs(probe.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(probe, "w") as handle:
            handle.write("probe")
        try:
            with fs.open(probe, "r") as handle:
                if handle.read() != "probe":
                    raise OSError(f"{probe} read back different content")
        finally:
            fs.rm(probe)
            if not storage.is_remote(self.url):
                # Blob stores have no empty folders to remove; a local one stays if not empty.
                with contextlib.suppress(OSError):
                    fs.rmdir(probe.rsplit("/", 1)[0])
        return f"wrote, read and removed a probe file under {self.url}"


def read_bytes(url: str) -> bytes | None:
    """Any file's bytes by URL (a lake reference or a configured path); None when missing."""
    fs, path = storage.filesystem(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as handle:
        return handle.read()


def _readable_by_pandas(frame: pd.DataFrame) -> Any:
    """The frame as an Arrow table pandas can read back. An empty day's list columns have an
    ArrowDtype, which pandas records under a name it cannot parse ('list<item: int64>[pyarrow]'):
    the file would fail every reader. They are recorded as object columns, as a day with rows
    has them."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = json.loads(table.schema.metadata[b"pandas"])
    for column in meta["columns"]:
        if str(column.get("numpy_type", "")).startswith("list<"):
            column["numpy_type"] = "object"
    return table.replace_schema_metadata({**table.schema.metadata, b"pandas": json.dumps(meta)})
