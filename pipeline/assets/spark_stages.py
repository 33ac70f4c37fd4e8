"""The Spark stages of a run as one Spark submission: network_sessions → pair_daily_stats →
beaconing_candidates in one session locally and in ONE Livy batch on Synapse, so a daily run
waits for one pool start, not three. Each asset still materializes alone (`can_subset`).

Each stage module (`sessions`, `pair_stats`, `candidates`) says what its asset is (`spec`,
`check_specs`), which Spark steps it needs (`plan`) and what its reports mean (`result`); this
module only strings them together.
"""

import time
from contextlib import ExitStack
from typing import Any

import dagster as dg

from pipeline.assets import candidates, pair_stats, sessions
from pipeline.partitions import days_in_run
from pipeline.resources.spark import SparkJobRunner
from pipeline.settings import Settings

# In graph order: a stage's steps run after those of the stages before it.
STAGES: tuple[Any, ...] = (sessions, pair_stats, candidates)


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="spark_stages",
        specs=[stage.spec(settings) for stage in STAGES],
        check_specs=[check for stage in STAGES for check in stage.check_specs(settings)],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=True,
        description=(
            "The Spark stages of a run (sessions, pair summaries, candidates) as one Spark "
            "submission; select any of them alone."
        ),
    )
    def spark_stages(context: dg.AssetExecutionContext, spark: SparkJobRunner) -> Any:
        days = days_in_run(context)
        selected = [s for s in STAGES if dg.AssetKey(s.NAME) in context.selected_asset_keys]
        started = time.monotonic()
        with ExitStack() as stack:
            plans = [stage.plan(settings, days, context.log, stack) for stage in selected]
            steps = [step for plan in plans for step in plan.steps]
            context.log.info(
                f"spark: {len(steps)} step(s) for {', '.join(s.NAME for s in selected)} "
                "in one submission"
            )
            reports = spark.run_steps(steps, progress=context.log.info)
        context.log.info(f"spark: {len(steps)} step(s) done in {time.monotonic() - started:.0f} s")
        checks = context.selected_asset_check_keys
        for stage, plan in zip(selected, plans, strict=True):
            stage_reports, reports = reports[: len(plan.steps)], reports[len(plan.steps) :]
            result = stage.result(settings, plan, stage_reports, context.log)
            yield dg.MaterializeResult(
                asset_key=stage.NAME,
                metadata=result.metadata,
                check_results=[
                    c
                    for c in result.check_results or []
                    if dg.AssetCheckKey(dg.AssetKey(stage.NAME), c.check_name) in checks
                ],
            )

    return spark_stages
