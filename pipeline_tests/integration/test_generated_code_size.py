"""Ingest's classification must stay compilable by the JVM's JIT.

Spark generates one Java method per whole-stage-codegen stage; HotSpot never JIT-compiles a
method of more than 8000 bytes of bytecode (`-XX:-DontCompileHugeMethods` is off), so such a
stage runs interpreted at about twice the CPU. The classification of export lines was 12 kB
once (every field typed twice); a new field or check can silently push it back over. This test
compiles the stages of the classification as the daily run plans it (3 days, 3 vendors) and
reads each one's largest method size from Spark's code generator.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pipeline.ingest.network_sessions import _classify

HOTSPOT_HUGE_METHOD_LIMIT = 8000


def _largest_generated_methods(frame: DataFrame) -> list[tuple[str, int]]:
    """(stage's top operator, largest method bytecode size) for each codegen stage."""
    frame.collect()  # adaptive execution settles the final plan when it runs
    jvm: Any = frame.sparkSession._jvm  # type: ignore[attr-defined]
    generator = jvm.org.apache.spark.sql.catalyst.expressions.codegen.CodeGenerator
    sizes: list[tuple[str, int]] = []

    def walk(plan: Any) -> None:
        name = plan.getClass().getSimpleName()
        if name == "AdaptiveSparkPlanExec":
            return walk(plan.executedPlan())
        if name.endswith("QueryStageExec"):
            return walk(plan.plan())
        if name == "WholeStageCodegenExec":
            stats = generator.compile(plan.doCodeGen()._2())._2()
            sizes.append((plan.child().nodeName(), stats.maxMethodCodeSize()))
        children = plan.children().iterator()
        while children.hasNext():
            walk(children.next())

    walk(frame._jdf.queryExecution().executedPlan())  # type: ignore[attr-defined]
    return sizes


def test_classification_stages_stay_under_the_jit_method_limit(spark: SparkSession) -> None:
    days = [dt.date(2026, 3, 10), dt.date(2026, 3, 11), dt.date(2026, 3, 12)]
    record = {
        "TimeGenerated": "2026-03-10T08:00:00Z",
        "SourceIP": "10.0.0.5",
        "DestinationIP": "203.0.113.7",
        "SourcePort": 50000,
        "DestinationPort": 443,
        "Protocol": "TCP",
        "SentBytes": 400,
        "ReceivedBytes": 900,
        "DeviceVendor": "Fortinet",
    }
    folder = "/WorkspaceResourceId=/x/y=2026/m=03/d=10/h=08/m=00/PT1H.json"
    raw = spark.createDataFrame(
        [(json.dumps(record), folder), ("{broken", folder)], "value string, source_file string"
    )
    classified = _classify(raw, days, ("Fortinet", "Palo Alto Networks", "Check Point"), "n0nce")

    sizes = _largest_generated_methods(classified)

    assert sizes, "no whole-stage codegen stage was found: the plan walk is out of date"
    assert all(size < HOTSPOT_HUGE_METHOD_LIMIT for _, size in sizes), sizes
