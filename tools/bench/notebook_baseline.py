"""One bench step: the Sentinel notebook's query as shipped, over raw export JSON of a window.

As the notebook does: read every day folder of the window as JSON with schema inference, then
run its query (pipeline/detect/notebook_query.py, as shipped). Same Spark settings as the
pipeline. The only change: TimeGenerated is cast to a timestamp, which the notebook's Spark 3
did implicitly and Spark 4's ANSI mode refuses.
"""

from __future__ import annotations

import time

from pyspark.sql import functions as F

from pipeline.detect import notebook_query
from pipeline.ingest import export_layout
from pipeline.lake import spark as lake_spark
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.settings import load_settings
from tools.bench.measure import report, window_from_args


def main() -> None:
    days = window_from_args()
    settings = load_settings()
    workspace = export_layout.workspace_path(settings.workspace_resource_id or "")
    folders = [
        lake_spark.spark_url(f"{settings.export_url}/{export_layout.day_folder(workspace, d)}")
        for d in days
    ]

    spark = SparkJobRunner(spark_config=spark_config(settings)).spark_session
    started = time.monotonic()
    spark.range(1).count()
    jvm_seconds = time.monotonic() - started

    started = time.monotonic()
    raw = spark.read.option("recursiveFileLookup", "true").json(folders)
    raw = raw.withColumn("TimeGenerated", F.col("TimeGenerated").cast("timestamp"))
    rows = notebook_query.query(raw, fixed=False).collect()
    report(
        {
            "jvm_seconds": round(jvm_seconds, 2),
            "run_seconds": round(time.monotonic() - started, 2),
            "days": len(days),
            "reported_pairs": len(rows),
        }
    )


if __name__ == "__main__":
    main()
