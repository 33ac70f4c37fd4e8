"""The Spark resource: one lazy session per process, local by default, a cluster when configured.

Assets never touch DataFrames: they ask this resource to run a stage's Spark job (a plain
function of a SparkSession and lake URIs, e.g. `pipeline.ingest.network_sessions.run`), so the
same job runs in-process here and on a cluster unchanged.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any

from dagster_pyspark import LazyPySparkResource

from pipeline.settings import Settings
from pipeline.spark import steps as spark_steps
from pipeline.spark import synapse_entry

# One Spark job and its keyword parameters; a run's Spark stages are a list of these.
SparkStep = tuple[Callable[..., Any], dict[str, Any]]


class JavaMissingError(RuntimeError):
    pass


def spark_config(settings: Settings) -> dict[str, Any]:
    """Session settings: small shuffles and packed small files for one machine, UTC always."""
    config: dict[str, Any] = {
        "spark.app.name": "beacon-pipeline",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.log.level": "WARN",
    }
    if settings.spark_master.startswith("sc://"):
        config["spark.remote"] = settings.spark_master
        return config
    config["spark.master"] = settings.spark_master
    if settings.spark_mode == "local":
        config.update(
            {
                "spark.driver.memory": settings.spark_driver_memory,
                # G1 keeps the heap it grew to for a run's peak allocation; a long backfill then
                # holds up to the driver memory although its live set stays flat. These let it
                # return committed heap after collections (docs/performance.md, "Memory").
                "spark.driver.extraJavaOptions": "-XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=40",
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                # Export blobs are many and small: pack them into few tasks, and list them on
                # the driver (a day is ~300-600 local files; Spark's parallel listing job costs
                # more than the listing). Clusters keep parallel listing for remote storage.
                "spark.sql.sources.parallelPartitionDiscovery.threshold": "1000000",
                "spark.sql.files.openCostInBytes": str(1 << 20),
                "spark.sql.files.maxPartitionBytes": str(64 << 20),
                "spark.sql.shuffle.partitions": "4",
                "spark.sql.adaptive.coalescePartitions.enabled": "true",
            }
        )
    return config


def require_java() -> None:
    """Fail early with what to install, instead of a py4j stack trace."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.path.exists(os.path.join(java_home, "bin", "java")):
        return
    if shutil.which("java"):
        return
    raise JavaMissingError(
        "Spark needs Java 17 (or 11/21) and none was found on PATH or in JAVA_HOME. "
        "Install it, e.g. `sudo apt-get install openjdk-17-jre-headless` (Debian/Ubuntu) or "
        "`brew install openjdk@17` (macOS), then run again."
    )


class SparkJobRunner(LazyPySparkResource):
    """Runs a named Spark job (a function of a SparkSession and keyword parameters)."""

    def _init_session(self) -> None:
        if self._spark_session is None and "spark.remote" not in self.spark_config:
            require_java()
            # Python workers must use this interpreter (with pandas/numpy), not the system one.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        super()._init_session()

    def run_steps(
        self, steps: Sequence[SparkStep], progress: Callable[[str], None] | None = None
    ) -> list[Any]:
        """Run the steps in order in this process's session; their reports, in the same order.

        By name, as on a Synapse pool, so a job the pool could not run fails here too.
        """
        named = [(synapse_entry.job_name(job), params) for job, params in steps]
        return spark_steps.run(
            self.spark_session, named, **({"progress": progress} if progress else {})
        )
