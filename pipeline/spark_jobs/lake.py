"""Lake paths, per-day manifests and day-level replacement, shared by every Spark job.

Each table is `{lake}/{table}/date=YYYY-MM-DD/` parquet. After a job commits its days it writes
`{lake}/{table}/_manifest/date=YYYY-MM-DD.json` with the day's counts: a day *exists* for
downstream stages when its manifest exists, so a day with zero rows is not mistaken for a
missing one, and a crashed write (no manifest yet) is not mistaken for a finished one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import fsspec
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from pyspark.sql import DataFrame, SparkSession

from pipeline import storage


def table_url(lake_url: str, table: str) -> str:
    return f"{lake_url.rstrip('/')}/{table}"


def day_url(lake_url: str, table: str, day: dt.date) -> str:
    return f"{table_url(lake_url, table)}/date={day.isoformat()}"


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of a lake URL with its credentials (local, abfss:// or az://)."""
    return storage.filesystem(url)


def spark_url(url: str) -> str:
    """Local paths become absolute `file:` URLs so Spark never resolves them against HDFS."""
    fs, path = _fs(url)
    return f"file://{fs._strip_protocol(path)}" if isinstance(fs, LocalFileSystem) else url


def manifest_url(lake_url: str, table: str, day: dt.date) -> str:
    return f"{table_url(lake_url, table)}/_manifest/date={day.isoformat()}.json"


def write_manifest(lake_url: str, table: str, day: dt.date, facts: dict[str, Any]) -> None:
    fs, path = _fs(manifest_url(lake_url, table, day))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    body = json.dumps({"date": day.isoformat(), **facts}, sort_keys=True, default=str)
    tmp = path + ".tmp"
    with fs.open(tmp, "w") as handle:
        handle.write(body)
    fs.mv(tmp, path)


def read_manifest(lake_url: str, table: str, day: dt.date) -> dict[str, Any] | None:
    fs, path = _fs(manifest_url(lake_url, table, day))
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as handle:
        return json.load(handle)


def days_present(lake_url: str, table: str, days: Iterable[dt.date]) -> list[dt.date]:
    """The days among `days` whose manifest exists (one listing, not one call per day)."""
    have = set(days_in_table(lake_url, table))
    return [d for d in days if d in have]


def days_in_table(lake_url: str, table: str) -> list[dt.date]:
    """Every day whose manifest exists, oldest first (one listing)."""
    fs, path = _fs(f"{table_url(lake_url, table)}/_manifest")
    if not fs.exists(path):
        return []
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    return sorted(
        dt.date.fromisoformat(n[len("date=") : -len(".json")])
        for n in names
        if n.startswith("date=") and n.endswith(".json")
    )


def latest_day(lake_url: str, table: str) -> dt.date | None:
    """The most recent day whose manifest exists (one listing)."""
    days = days_in_table(lake_url, table)
    return days[-1] if days else None


def forget_days(lake_url: str, table: str, days: Iterable[dt.date]) -> None:
    """Remove the manifests of days about to be rewritten: until the new write commits, they
    are not complete."""
    for day in days:
        fs, path = _fs(manifest_url(lake_url, table, day))
        if fs.exists(path):
            fs.rm(path)


def remove_day_data(lake_url: str, table: str, day: dt.date) -> None:
    fs, path = _fs(day_url(lake_url, table, day))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def replace_days(
    df: DataFrame, lake_url: str, table: str, days: list[dt.date], counts: dict[str, int]
) -> None:
    """Write `df` (with a string `date` column) replacing exactly the given days.

    Spark's dynamic partition overwrite writes the new files under `{table}/.spark-staging-*`
    and only at job commit replaces each day's folder (delete, then rename), so a run killed
    while its tasks write leaves the previous version of every day, and its manifest, in place
    (pipeline_tests/integration/test_faults.py kills one). What is not atomic: the commit itself
    (a delete and a rename per day, milliseconds), and a job's tables one after the other
    (network_sessions commits before quarantine, and manifests are written last), so a kill
    between them leaves a day newer than its manifest until the re-run. A killed run's
    `.spark-staging-*` folder stays behind; readers ignore it (a dot folder, never a `date=`).
    Days of the range that have no rows lose their old folder too, so a re-run never leaves
    stale rows behind.
    """
    (
        df.write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy("date")
        .parquet(spark_url(table_url(lake_url, table)))
    )
    for day in days:
        if counts.get(day.isoformat(), 0) == 0:
            remove_day_data(lake_url, table, day)


def read_days(
    spark: SparkSession, lake_url: str, table: str, days: list[dt.date], schema: Any
) -> DataFrame:
    """Read the given days of a table with an explicit schema (days must exist)."""
    if not days:
        return spark.createDataFrame([], schema)
    fs_days = [d for d in days if _exists(day_url(lake_url, table, d))]
    if not fs_days:
        return spark.createDataFrame([], schema)
    return (
        spark.read.schema(schema)
        .option("basePath", spark_url(table_url(lake_url, table)))
        .parquet(*[spark_url(day_url(lake_url, table, d)) for d in fs_days])
    )


def _exists(url: str) -> bool:
    fs, path = _fs(url)
    return fs.exists(path)


def write_pandas_day(frame: Any, lake_url: str, table: str, day: dt.date, name: str) -> str:
    """Replace a small per-day output written from the driver (parquet or CSV text).

    Written aside, then swapped in, so readers never see a half-written file.
    """
    target = day_url(lake_url, table, day)
    fs, path = _fs(target)
    fs.makedirs(path, exist_ok=True)
    final = f"{path}/{name}"
    tmp = f"{path}/.{name}.tmp"
    if isinstance(frame, str):
        with fs.open(tmp, "w", newline="") as handle:
            handle.write(frame)
    else:
        with fs.open(tmp, "wb") as handle:
            pq.write_table(_readable_by_pandas(frame), handle)
    fs.mv(tmp, final)
    return f"{target}/{name}"


def _readable_by_pandas(frame: Any) -> Any:
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
