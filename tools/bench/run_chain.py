"""One bench step: materialize the pipeline's assets for a day or a range, as one process.

Settings come from the environment (BEACON_*), exactly as for the Dagster code location. The
Spark session is started first and timed on its own, so the run's time excludes JVM start.
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from pipeline.definitions import build_definitions
from pipeline.resources.spark import SparkJobRunner, SparkStep, spark_config
from pipeline.settings import load_settings
from tools.bench.measure import report

# What the run asked of Spark: one entry per submission (a Livy batch on Synapse), and the
# seconds each job took, summed over its steps.
SUBMISSIONS: list[list[str]] = []
JOB_SECONDS: collections.Counter[str] = collections.Counter()


class CountingRunner(SparkJobRunner):
    """The local runner, counting submissions and timing each job."""

    def run_steps(
        self, steps: Sequence[SparkStep], progress: Callable[[str], None] | None = None
    ) -> list[Any]:
        SUBMISSIONS.append([job.__module__.rsplit(".", 1)[-1] for job, _ in steps])
        reports = []
        for job, params in steps:
            started = time.monotonic()
            reports += super().run_steps([(job, params)], progress)
            JOB_SECONDS[job.__module__.rsplit(".", 1)[-1]] += time.monotonic() - started
        return reports


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--first", required=True)
    parser.add_argument("--last", required=True)
    parser.add_argument("--select", default="*")
    args = parser.parse_args()

    settings = load_settings()
    defs = build_definitions(settings)
    runner = CountingRunner(spark_config=spark_config(settings))
    started = time.monotonic()
    runner.spark_session.range(1).count()
    jvm_seconds = time.monotonic() - started

    instance = dg.DagsterInstance.ephemeral()
    tags = (
        {}
        if args.first == args.last
        else {
            "dagster/asset_partition_range_start": args.first,
            "dagster/asset_partition_range_end": args.last,
        }
    )
    started = time.monotonic()
    result = dg.materialize(
        list(defs.assets),
        selection=args.select,
        resources={"spark": runner},
        instance=instance,
        tags=tags,
        partition_key=args.first if args.first == args.last else None,
    )
    run_seconds = time.monotonic() - started
    if not result.success:
        raise SystemExit("run failed")
    steps = {
        s.step_key: round(s.end_time - s.start_time, 2)
        for s in instance.get_run_step_stats(result.run_id)
        if s.end_time and s.start_time
    }
    # A range run materializes each day with the same metadata (the range's totals): take one.
    lines = 0
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.path[-1] == "network_sessions":
            value = materialization.metadata.get("lines")
            lines = max(lines, int(value.value) if value is not None else 0)
    report(
        {
            "jvm_seconds": round(jvm_seconds, 2),
            "run_seconds": round(run_seconds, 2),
            "steps": steps,
            "records_ingested": lines,
            "spark_submissions": len(SUBMISSIONS),
            "spark_jobs": SUBMISSIONS,
            "job_seconds": {job: round(seconds, 2) for job, seconds in JOB_SECONDS.items()},
        }
    )


if __name__ == "__main__":
    main()
