"""The Spark resource: one lazy session per process, local by default, a cluster when configured.

Assets never touch DataFrames: they ask this resource to run a stage's Spark job (a plain
function of a SparkSession and lake URIs, e.g. `pipeline.ingest.network_sessions.run`), so the
same job runs in-process here and on a cluster unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from dagster_pyspark import LazyPySparkResource

from pipeline.settings import Settings
from pipeline.spark import steps as spark_steps
from pipeline.spark import synapse_entry
from pipeline.spark.packaging import current_package

# One Spark job and its keyword parameters; a run's Spark stages are a list of these.
SparkStep = tuple[Callable[..., Any], dict[str, Any]]


class JavaMissingError(RuntimeError):
    pass


# Session-level settings: a Spark Connect client may set these on a running server too.
_SESSION_CONFIG = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
}
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def spark_config(settings: Settings) -> dict[str, Any]:
    """Session settings: small shuffles and packed small files for one machine, UTC always."""
    if settings.spark_master.startswith("sc://"):
        # The server owns its JVM settings; a client sets only what a session may change.
        return {"spark.remote": settings.spark_master, **_SESSION_CONFIG}
    config: dict[str, Any] = {
        "spark.app.name": "beacon-pipeline",
        **_SESSION_CONFIG,
        "spark.log.level": "WARN",
        "spark.master": settings.spark_master,
    }
    if settings.spark_mode == "local":
        config.update(_local_jvm_config(settings))
    return config


def _local_jvm_config(settings: Settings) -> dict[str, str]:
    """A Spark JVM on this machine: the local session's, and the local Connect server's."""
    return {
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


def connect_server_command(settings: Settings, master: str, port: int) -> list[str]:
    """`spark-submit` of a Spark Connect server on this machine, in the foreground.

    A daily run that connects to it (`BEACON_SPARK=cluster`, `BEACON_SPARK_MASTER=sc://…`)
    skips the JVM start and the JIT warm-up a fresh local session pays on every run.
    """
    import pyspark

    spark_submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    config = {
        "spark.master": master,
        **_SESSION_CONFIG,
        **_local_jvm_config(settings),
        "spark.connect.grpc.binding.port": str(port),
        "spark.log.level": "WARN",
    }
    command = [spark_submit, "--class", CONNECT_SERVER_CLASS, "--name", "beacon Spark Connect"]
    for key, value in config.items():
        command += ["--conf", f"{key}={value}"]
    return command


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


@contextlib.contextmanager
def running_connect_server(
    log_path: str, master: str = "local[*,4]", env: dict[str, str] | None = None
) -> Iterator[str]:
    """`python -m pipeline spark-server` on a free loopback port until the block ends; its URL.

    For scripts and tests that need a server for a while (the bench, the Connect tests).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "pipeline", "spark-server", "--master", master]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while _connection_error("127.0.0.1", port, timeout_s=1) is not None:
            if process.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as log:
                    raise SparkConnectUnreachableError(f"no server on {port}: {log.read()[-2000:]}")
            time.sleep(1)
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _connection_error(host: str, port: int, timeout_s: float) -> OSError | None:
    """Why nothing answers at host:port, or None when something listens."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return None
    except OSError as error:
        return error


class SparkConnectUnreachableError(RuntimeError):
    pass


def require_connect_server(url: str, timeout_s: float = 10.0) -> None:
    """Fail at once when nothing listens at a `sc://` URL (the Connect client retries for
    minutes before it gives up)."""
    address = url.removeprefix("sc://").split("/", 1)[0]
    host, _, port = address.partition(":")
    error = _connection_error(host, int(port or 15002), timeout_s)
    if error is not None:
        raise SparkConnectUnreachableError(
            f"no Spark Connect server answers at {url} ({error}). Start one where the lake is "
            "reachable (`python -m pipeline spark-server`, docs/operations.md), or set "
            "BEACON_SPARK=local."
        ) from error


class SparkJobRunner(LazyPySparkResource):
    """Runs a named Spark job (a function of a SparkSession and keyword parameters)."""

    def _init_session(self) -> None:
        if self._spark_session is not None:
            return
        if "spark.remote" in self.spark_config:
            require_connect_server(self.spark_config["spark.remote"])
            super()._init_session()
            _ship_code(self._spark_session)
            return
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


def _ship_code(session: Any) -> None:
    """Give a Spark Connect session this process's code for its Python workers.

    The server's workers run our `mapInPandas` functions; they must import this version of the
    pipeline, not whatever version (if any) is installed where the server runs. The zip is the
    one a Synapse batch gets (`pipeline.spark.packaging`), named by its content hash.
    """
    package = current_package()
    # addArtifacts uploads the file before it returns: the local copy is not needed after.
    with tempfile.TemporaryDirectory(prefix="beacon-code-") as folder:
        path = os.path.join(folder, f"pipeline-{package.version}.zip")
        with open(path, "wb") as handle:
            handle.write(package.zip_bytes)
        session.addArtifacts(path, pyfile=True)
