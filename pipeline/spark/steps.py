"""Several Spark jobs in one session, in order: a run's Spark stages as one submission.

On Synapse a run's stages then wait for one pool start instead of one per stage (a Livy batch
each); locally they share the one session anyway. Each step is `(module:function, params)`,
the name `pipeline.spark.synapse_entry.job_name` gives a job, so the sequence travels to the pool
as data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipeline.spark import synapse_entry


def _print(line: str) -> None:
    # On the pool this lands in the driver log, which the Dagster side streams into the run.
    print(line, flush=True)


def run(
    spark: Any,
    steps: list[tuple[str, dict[str, Any]]],
    progress: Callable[[str], None] | None = None,
) -> list[Any]:
    """Run each `(job name, params)` with `spark`; the jobs' reports, in the same order. Each
    step's end goes to `progress` (default: printed)."""
    progress = progress or _print
    reports = []
    for number, (name, params) in enumerate(steps, start=1):
        started = time.monotonic()
        reports.append(synapse_entry.resolve_job(name)(spark, **params))
        seconds = time.monotonic() - started
        progress(f"beacon steps: {number}/{len(steps)} {name} done in {seconds:.0f} s")
    return reports
