"""Spark's side of the lake: a job's days replaced at once, days read with an explicit schema.

Paths and manifests are `pipeline.lake.Lake`'s; this module only adds what needs a SparkSession.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from pyspark.sql import DataFrame, SparkSession

from pipeline.azure import storage
from pipeline.lake import Lake


def spark_url(url: str) -> str:
    """Local paths become absolute `file:` URLs so Spark never resolves them against HDFS."""
    fs, path = storage.filesystem(url)
    return f"file://{fs._strip_protocol(path)}" if isinstance(fs, LocalFileSystem) else url


def replace_days(
    df: DataFrame, lake: Lake, table: str, days: list[dt.date], counts: dict[str, int]
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
        .parquet(spark_url(lake.table_url(table)))
    )
    for day in days:
        if counts.get(day.isoformat(), 0) == 0:
            lake.remove_day_data(table, day)


def read_days(
    spark: SparkSession, lake: Lake, table: str, days: list[dt.date], schema: Any
) -> DataFrame:
    """Read the given days of a table with an explicit schema (days must exist)."""
    fs_days = [d for d in days if lake.has_day_data(table, d)]
    if not fs_days:
        return spark.createDataFrame([], schema)
    return (
        spark.read.schema(schema)
        .option("basePath", spark_url(lake.table_url(table)))
        .parquet(*[spark_url(lake.day_url(table, d)) for d in fs_days])
    )
