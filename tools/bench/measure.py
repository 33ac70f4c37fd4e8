"""Run a whole process and measure it: wall time, peak memory of its process tree, its JSON answer.

Each measured step is its own process (`python -m tools.bench.<step>`), so JVM start,
imports and Dagster's definition loading are paid as a user pays them. The step prints one JSON
line prefixed with `BENCH ` holding its inner timings (e.g. with the JVM start taken out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PREFIX = "BENCH "


@dataclass
class Measured:
    name: str
    wall_seconds: float
    peak_rss_mb: float  # the whole tree (PSS): Python driver + JVM + Python workers
    peak_jvm_rss_mb: float
    peak_driver_rss_mb: float  # the Python process that runs Dagster and drives Spark
    peak_workers_rss_mb: float  # Spark's Python workers (scoring), summed
    # The JVM's heap right after a collection, at its largest: live data plus what that
    # collection left, not the heap the JVM has grown into (NaN without a JVM).
    peak_heap_after_gc_mb: float = math.nan
    inner: dict[str, Any] = field(default_factory=dict)


def _sample_tree(root: psutil.Process, peaks: dict[str, float], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = jvm = workers = driver = 0.0
        for process in processes:
            try:
                # PSS, not RSS: Spark's Python workers are forked from one daemon and share most
                # of their pages; summing RSS would count those pages once per worker.
                rss = process.memory_full_info().pss / 1e6
                name = process.name()
            except psutil.Error:
                continue
            total += rss
            if name == "java":
                jvm += rss
            elif process.pid == root.pid:
                driver = rss
            else:
                workers += rss
        now = {"total": total, "jvm": jvm, "driver": driver, "workers": workers}
        for key, value in now.items():
            peaks[key] = max(peaks[key], value)
        stop.wait(0.5)


# JDK 17 unified GC log: `… GC(12) Pause Young (Normal) (G1 Evacuation Pause) 812M->301M(4096M) …`
GC_PAUSE = re.compile(r"\bGC\(\d+\) Pause .* (\d+)M->(\d+)M\((\d+)M\)")


def heap_after_gc_mb(gc_log: Path) -> float:
    """The largest heap occupancy right after a collection in a JVM's GC log."""
    if not gc_log.exists():
        return math.nan
    after = [int(m.group(2)) for m in GC_PAUSE.finditer(gc_log.read_text(errors="replace"))]
    return float(max(after)) if after else math.nan


def run_step(name: str, module: str, args: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run `python -m module args` to completion; raise with its log tail if it fails."""
    started = time.monotonic()
    gc_log = log.with_suffix(".gc.log")
    gc_log.unlink(missing_ok=True)
    # The java launcher reads JDK_JAVA_OPTIONS, so the step's Spark JVM logs its collections.
    env = {**env, "JDK_JAVA_OPTIONS": f"-Xlog:gc:file={gc_log}"}
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=output,
            text=True,
        )
        peaks = {"total": 0.0, "jvm": 0.0, "driver": 0.0, "workers": 0.0}
        stop = threading.Event()
        sampler = threading.Thread(
            target=_sample_tree, args=(psutil.Process(process.pid), peaks, stop), daemon=True
        )
        sampler.start()
        try:
            stdout, _ = process.communicate()
        except BaseException:
            # Interrupted: never leave a step (and its JVM) writing into the bench lake.
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            raise
        finally:
            stop.set()
            sampler.join()
    wall = time.monotonic() - started
    output_lines = stdout.splitlines()
    log.open("a").write("\n".join(output_lines) + "\n")
    if process.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"bench step {name} failed ({process.returncode}); log {log}:\n{tail}")
    inner: dict[str, Any] = {}
    for line in output_lines:
        if line.startswith(PREFIX):
            inner = json.loads(line[len(PREFIX) :])
    return Measured(
        name,
        wall,
        peaks["total"],
        peaks["jvm"],
        peaks["driver"],
        peaks["workers"],
        heap_after_gc_mb(gc_log),
        inner,
    )


def window_from_args() -> list[dt.date]:
    """The days of a step's `--first D --last D` arguments, both included."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--first", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--last", required=True, type=dt.date.fromisoformat)
    args = parser.parse_args()
    return [args.first + dt.timedelta(days=i) for i in range((args.last - args.first).days + 1)]


def report(values: dict[str, Any]) -> None:
    """What a step prints for `run_step` to pick up."""
    print(PREFIX + json.dumps(values, default=str), flush=True)
