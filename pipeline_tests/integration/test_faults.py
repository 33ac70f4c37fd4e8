"""Faults with real processes: a run SIGKILLed mid-write, Spark task retries, Dagster retries.

The killed run is a real child process (Python + its Spark JVM) running the real assets through
Dagster. It is paused inside the Spark write it must die in (a pass-through `mapInPandas` stage
that blocks after handing the writer its first batch), so the kill lands mid-write every time,
without timing guesses. The whole process group is then SIGKILLed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from pipeline.definitions import build_definitions
from pipeline.ingest import network_sessions
from pipeline.ingest.export_layout import blobs_for_days
from pipeline.lake import Lake
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.settings import Settings, load_settings
from pipeline_tests.conftest import record, write_blob

D = dt.date(2026, 5, 20)
STAGES = ("network_sessions", "pair_daily_stats", "beaconing_candidates")
TABLES = ("network_sessions", "quarantine", "pair_daily_stats", "beaconing_candidates")

CHILD = """
import glob, json, os, sys, time
import dagster as dg
from pyspark import TaskContext
from pipeline.definitions import build_definitions
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.settings import load_settings
from pipeline.lake import spark as lake_spark

args = json.loads(sys.argv[1])
settings = load_settings()
real_replace_days = lake_spark.replace_days


def paused(df, lake, table, days, counts):
    if table == args["pause_in"]:
        marker, alive = args["marker"], args["alive"]

        staging = lake.url + "/" + table + "/.spark-staging-*/**/*.parquet"

        def block(batches):
            # Two tasks write: the first writes its file normally; the second waits until that
            # file sits in Spark's staging folder (job not committed), tells the test, and waits
            # to be killed. (Python buffers its output, so blocking after a yield would not
            # reliably leave a file behind.)
            if TaskContext.get().partitionId() == 0:
                yield from batches
                return
            while not glob.glob(staging, recursive=True):
                time.sleep(0.05)
            open(marker, "w").close()
            while os.path.exists(alive):
                time.sleep(0.05)
            os._exit(1)
            yield from batches

        df = df.repartition(2).mapInPandas(block, df.schema)
    return real_replace_days(df, lake, table, days, counts)


lake_spark.replace_days = paused
defs = build_definitions(settings)
dg.materialize(
    list(defs.assets),
    selection=dg.AssetSelection.assets(*args["stages"]),
    partition_key=args["day"],
    resources={"spark": SparkJobRunner(spark_config=spark_config(settings))},
    raise_on_error=False,
)
print("CHILD FINISHED WITHOUT BEING KILLED")
"""


def beacon(src: str, dst: str, port: int, every_s: float, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    start = dt.datetime.combine(D, dt.time())
    times = np.cumsum(rng.uniform(every_s * 0.9, every_s * 1.1, int(86_000 / every_s)))
    return [
        record(
            (start + dt.timedelta(seconds=float(t))).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            src=src,
            dst=dst,
            DestinationPort=port,
            SourcePort=int(40000 + i % 20000),
            SentBytes=int(300 + rng.integers(0, 5)),
        )
        for i, t in enumerate(times)
    ]


def write_records(export: Path, records: list[dict[str, Any]], minute: int) -> None:
    by_hour: dict[int, list[Any]] = {}
    for r in records:
        by_hour.setdefault(int(r["TimeGenerated"][11:13]), []).append(r)
    for hour, lines in by_hour.items():
        write_blob(export, D, hour, minute, [*lines, "not json"])


def environment(export: Path, lake_url: Path) -> dict[str, str]:
    return {
        "BEACON_SOURCE": "export",
        "BEACON_EXPORT_URL": str(export),
        "BEACON_LAKE_URL": str(lake_url),
        "BEACON_START_DATE": (D - dt.timedelta(days=2)).isoformat(),
        "BEACON_SPARK_MASTER": "local[2]",
        "BEACON_MIN_WINDOW_COVERAGE": "0",
        "BEACON_MAX_QUARANTINE_RATIO": "1",
    }


def settings_for(export: Path, lake_url: Path) -> Settings:
    return load_settings(environment(export, lake_url))


def materialize(settings: Settings) -> None:
    defs = build_definitions(settings)
    result = dg.materialize(
        list(defs.assets),
        selection=dg.AssetSelection.assets(*STAGES),
        partition_key=D.isoformat(),
        resources={"spark": SparkJobRunner(spark_config=spark_config(settings))},
    )
    assert result.success


def snapshot(lake_url: str) -> dict[str, Any]:
    """Every table's day as sorted content, plus its manifest."""
    state: dict[str, Any] = {}
    for table in TABLES:
        path = Lake(lake_url).day_url(table, D)
        frame = pd.read_parquet(path) if os.path.exists(path) else pd.DataFrame()
        if not frame.empty:
            frame = frame.drop(columns=["date"], errors="ignore")
            frame = frame.astype(str).sort_values(list(frame.columns)).reset_index(drop=True)
        state[table] = frame
        manifest = Lake(lake_url).read_manifest(table, D)
        state[f"{table}/manifest"] = json.dumps(manifest, sort_keys=True)
    return state


def assert_same(left: dict[str, Any], right: dict[str, Any], tables=TABLES) -> None:
    for table in tables:
        pd.testing.assert_frame_equal(left[table], right[table], obj=table)
        assert len(left[table]) > 0, table


def run_and_kill(env: dict[str, str], root: Path, pause_in: str, stages: tuple[str, ...]) -> None:
    marker, alive = root / f"{pause_in}.paused", root / f"{pause_in}.alive"
    alive.touch()
    args = {
        "pause_in": pause_in,
        "marker": str(marker),
        "alive": str(alive),
        "stages": list(stages),
        "day": D.isoformat(),
    }
    log = root / f"{pause_in}.log"
    with log.open("wb") as output:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(args)],
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    give_up = time.monotonic() + 900  # a hang guard, not a timing assertion
    try:
        while not marker.exists():
            if time.monotonic() > give_up:
                pytest.fail(f"the run never reached its write; see {log}")
            if child.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"the run ended before reaching its write:\n{tail}")
            time.sleep(0.1)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        alive.unlink(missing_ok=True)  # releases any orphaned Python worker
    assert child.returncode == -signal.SIGKILL


@pytest.fixture()
def private_tmp() -> Iterator[Path]:
    """A temporary folder outside pytest's numbered ones, which a concurrent pytest on the same
    machine may rotate away mid-test (a child process would then wait for a marker forever)."""
    folder = Path(tempfile.mkdtemp(prefix="beacon-faults-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_run_killed_mid_write_keeps_the_previous_day_and_reruns_identically(spark, private_tmp):
    tmp_path = private_tmp
    root, export = tmp_path / "killed", tmp_path / "export"
    root.mkdir()
    env = environment(export, root / "lake")
    settings = load_settings(env)
    write_records(export, beacon("10.0.0.5", "203.0.113.9", 443, 60.0, seed=1), minute=0)
    materialize(settings)
    before = snapshot(settings.lake_url)
    assert len(before["beaconing_candidates"]) >= 1

    # New records arrive (a second beacon); the re-run that would add them is killed while
    # writing network_sessions: every table keeps its previous version and manifest.
    write_records(export, beacon("10.0.0.6", "198.51.100.20", 8443, 300.0, seed=2), minute=5)
    run_and_kill(env, root, "network_sessions", ("network_sessions",))
    # It died mid-write: its files were in Spark's staging folder, not yet swapped in.
    staged = (root / "lake" / "network_sessions").glob(".spark-staging-*/**/date=*/*.parquet")
    assert list(staged)
    assert_same(snapshot(settings.lake_url), before)
    for table in TABLES:
        assert snapshot(settings.lake_url)[f"{table}/manifest"] == before[f"{table}/manifest"]

    # Killed while writing beaconing_candidates (after its inputs were rewritten).
    run_and_kill(env, root, "beaconing_candidates", STAGES)
    assert list((root / "lake" / "beaconing_candidates").glob(".spark-staging-*"))
    after_kill = snapshot(settings.lake_url)
    assert_same(after_kill, before, tables=("beaconing_candidates",))
    assert after_kill["beaconing_candidates/manifest"] == before["beaconing_candidates/manifest"]
    assert len(after_kill["network_sessions"]) > len(before["network_sessions"])

    # The re-run equals an uninterrupted run on the same export, content for content.
    materialize(settings)
    materialize(settings_for(export, tmp_path / "fresh-lake"))
    rerun, uninterrupted = snapshot(settings.lake_url), snapshot(str(tmp_path / "fresh-lake"))
    assert_same(rerun, uninterrupted)
    assert len(rerun["beaconing_candidates"]) > len(before["beaconing_candidates"])


# --- Spark task failures ----------------------------------------------------------------------

RETRY_CHILD = """
import json, sys
from pyspark import TaskContext
from pyspark.sql import SparkSession
from pipeline.ingest.export_layout import blobs_for_days
from pipeline.resources.spark import spark_config
from pipeline.settings import load_settings
from pipeline.lake import spark as lake_spark
from pipeline.ingest import network_sessions

args = json.loads(sys.argv[1])
real_replace_days = lake_spark.replace_days
attempts = []


def failing_once(df, lake, table, days, counts):
    if table == "network_sessions":

        def fail_first_attempt(batches):
            context = TaskContext.get()
            if context.partitionId() == 0 and context.attemptNumber() == 0:
                raise RuntimeError("injected task failure")
            yield from batches

        df = df.mapInPandas(fail_first_attempt, df.schema)
    return real_replace_days(df, lake, table, days, counts)


lake_spark.replace_days = failing_once
day = __import__("datetime").date.fromisoformat(args["day"])
per_day, late = blobs_for_days(args["export"], [day])
urls = [b.url for b in per_day[day]] + [b.url for b in late]
results = {}
for name, master in args["masters"].items():
    builder = SparkSession.builder
    for key, value in spark_config(load_settings({"BEACON_SPARK_MASTER": master})).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        report = network_sessions.run(
            spark, lake_url=args["lakes"][name], days=[day], blob_urls=urls
        )
        results[name] = {"rows": report[args["day"]]["rows"]}
    except Exception as error:  # the control run must fail: report what failed
        results[name] = {"error": type(error).__name__ + ": " + str(error)[:300]}
    spark.stop()
print("RESULTS " + json.dumps(results))
"""


def test_spark_retries_a_failed_task_with_the_default_master(spark, private_tmp):
    """A task that fails once is retried by Spark under the default `local[*,4]` master and the
    day is written whole; under plain `local[2]` (no retries) the same fault fails the job."""
    tmp_path = private_tmp
    export = tmp_path / "export"
    write_records(export, beacon("10.0.0.5", "203.0.113.9", 443, 600.0, seed=3), minute=0)
    default_master = load_settings({}).spark_master
    assert default_master == "local[*,4]"
    args = {
        "day": D.isoformat(),
        "export": str(export),
        "masters": {"default": default_master, "no_retries": "local[2]"},
        "lakes": {"default": str(tmp_path / "retried"), "no_retries": str(tmp_path / "failed")},
    }
    done = subprocess.run(
        [sys.executable, "-c", RETRY_CHILD, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, done.stderr[-3000:]
    results = json.loads(lines[-1].removeprefix("RESULTS "))
    assert "injected task failure" in results["no_retries"]["error"]
    assert "injected task failure" in done.stderr  # the first attempt really failed
    # The retried run wrote the same day as a run without any fault.
    clean = str(tmp_path / "clean")
    per_day, late = blobs_for_days(str(export), [D])
    urls = [b.url for b in per_day[D]] + [b.url for b in late]
    expected = network_sessions.run(spark, lake_url=clean, days=[D], blob_urls=urls)
    assert results["default"]["rows"] == expected[D.isoformat()]["rows"] > 0
    retried, reference = snapshot(args["lakes"]["default"]), snapshot(clean)
    assert_same(retried, reference, tables=("network_sessions", "quarantine"))


# --- Dagster: retries, the schedule after a failed day, the run queue -------------------------


def test_scheduled_steps_retry_with_exponential_backoff():
    defs = build_definitions(Settings())
    policy = defs.resolve_job_def("daily_beaconing").op_retry_policy
    assert policy is not None
    assert policy.max_retries >= 2 and policy.delay and policy.delay >= 10
    assert policy.backoff == dg.Backoff.EXPONENTIAL
    assert policy.jitter is not None


def queued_run(instance: dg.DagsterInstance, tags: dict[str, str], status: Any) -> Any:
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.storage.dagster_run import DagsterRun

    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("beaconing"), "__repository__"),
        "daily_beaconing",
    )
    run = DagsterRun(job_name="daily_beaconing", tags=tags, status=status, remote_job_origin=origin)
    instance.add_run(run)
    return run


def runs_the_queue_starts(instance: dg.DagsterInstance) -> set[str]:
    """The real run-queue daemon's choice of queued runs to launch now."""
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
        QueuedRunCoordinatorDaemon,
    )

    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    chosen = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
    return {run.run_id for run in chosen}


def test_the_run_queue_never_runs_two_writers_and_a_failed_day_blocks_nothing(tmp_path):
    from dagster._core.storage.dagster_run import DagsterRunStatus as S

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(Path("dagster.yaml").read_text())
    instance = dg.DagsterInstance.from_config(str(home))
    defs = build_definitions(Settings(start_date=D - dt.timedelta(days=30)))
    schedule = defs.resolve_schedule_def("daily_beaconing_schedule")
    tick = dt.datetime.combine(D + dt.timedelta(days=1), dt.time(13), tzinfo=dt.UTC)

    # Yesterday's run failed; the schedule still asks for today's day (D) as usual.
    failed_day = (D - dt.timedelta(days=1)).isoformat()
    queued_run(instance, {"dagster/partition": failed_day}, S.FAILURE)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
    requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == [D.isoformat()]
    scheduled = queued_run(instance, dict(requests[0].tags), S.QUEUED)
    assert scheduled.tags["dagster/partition"] == D.isoformat()
    assert runs_the_queue_starts(instance) == {scheduled.run_id}

    # While it runs: a second run of the same day, and a range run (single-run backfill) over
    # days including D, both wait; so does a run of another day.
    started = scheduled.with_status(S.STARTED)
    instance.delete_run(scheduled.run_id)
    instance.add_run(started)
    same_day = queued_run(instance, {"dagster/partition": D.isoformat()}, S.QUEUED)
    range_run = queued_run(
        instance,
        {
            "dagster/asset_partition_range_start": (D - dt.timedelta(days=2)).isoformat(),
            "dagster/asset_partition_range_end": D.isoformat(),
            "dagster/backfill": "abcdefgh",
        },
        S.QUEUED,
    )
    assert "dagster/partition" not in range_run.tags  # why a per-day tag limit is not enough
    queued_run(instance, {"dagster/partition": (D + dt.timedelta(days=1)).isoformat()}, S.QUEUED)
    assert runs_the_queue_starts(instance) == set()

    # Once the running day ends (even by failing), the oldest waiting run starts.
    instance.delete_run(started.run_id)
    instance.add_run(started.with_status(S.FAILURE))
    assert runs_the_queue_starts(instance) == {same_day.run_id}
