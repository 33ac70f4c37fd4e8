"""The Spark stages of a run as one Spark submission: network_sessions → pair_daily_stats →
beaconing_candidates in one session locally and in ONE Livy batch on Synapse, so a daily run
waits for one pool start, not three. Each asset still materializes alone (`can_subset`).

Each stage (`NetworkSessions` in `ingest/assets.py`, `PairDailyStats` and `BeaconingCandidates`
in `detect/assets.py`) says what its asset is (`spec`, `check_specs`), which Spark steps it needs
(`plan`) and what its reports mean (`result`); this module only strings them together.
"""

import datetime as dt
import time
from contextlib import ExitStack
from typing import Any, Protocol

import dagster as dg

from pipeline.detect.assets import BeaconingCandidates, PairDailyStats
from pipeline.ingest.assets import NetworkSessions
from pipeline.partitions import days_in_run
from pipeline.resources.spark import SparkJobRunner, SparkStep
from pipeline.settings import Settings


class StagePlan(Protocol):
    steps: list[SparkStep]


class SparkStage(Protocol):
    """One Spark-computed asset: its spec and checks, its steps for some days, its result."""

    name: str

    def spec(self) -> dg.AssetSpec: ...
    def check_specs(self) -> list[dg.AssetCheckSpec]: ...
    def plan(self, days: list[dt.date], log: Any, stack: ExitStack) -> StagePlan: ...
    def result(self, plan: Any, reports: list[Any], log: Any) -> dg.MaterializeResult: ...


# In graph order: a stage's steps run after those of the stages before it.
STAGES: tuple[type[SparkStage], ...] = (NetworkSessions, PairDailyStats, BeaconingCandidates)


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    stages = [stage(settings) for stage in STAGES]

    @dg.multi_asset(
        name="spark_stages",
        specs=[stage.spec() for stage in stages],
        check_specs=[check for stage in stages for check in stage.check_specs()],
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
        selected = [s for s in stages if dg.AssetKey(s.name) in context.selected_asset_keys]
        started = time.monotonic()
        with ExitStack() as stack:
            plans = [stage.plan(days, context.log, stack) for stage in selected]
            steps = [step for plan in plans for step in plan.steps]
            context.log.info(
                f"spark: {len(steps)} step(s) for {', '.join(s.name for s in selected)} "
                "in one submission"
            )
            reports = spark.run_steps(steps, progress=context.log.info)
        context.log.info(f"spark: {len(steps)} step(s) done in {time.monotonic() - started:.0f} s")
        checks = context.selected_asset_check_keys
        for stage, plan in zip(selected, plans, strict=True):
            stage_reports, reports = reports[: len(plan.steps)], reports[len(plan.steps) :]
            result = stage.result(plan, stage_reports, context.log)
            yield dg.MaterializeResult(
                asset_key=stage.name,
                metadata=result.metadata,
                check_results=[
                    c
                    for c in result.check_results or []
                    if dg.AssetCheckKey(dg.AssetKey(stage.name), c.check_name) in checks
                ],
            )

    return spark_stages
