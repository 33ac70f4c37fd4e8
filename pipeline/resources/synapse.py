"""Runs the pipeline's Spark jobs on an Azure Synapse Spark pool: Livy batches + Dagster Pipes.

`SynapseJobRunner.run_steps(steps)` has the contract of the local `SparkJobRunner.run_steps`: it
runs each `job(spark, **params)` in order and returns their reports, only the Spark session lives
on the pool. One call is one Livy batch (`run`, running `pipeline.spark.steps`):

1. the code (`pipeline` + `dagster_pipes` as a zip, and an entry script; `pipeline.spark.packaging`)
   is uploaded to `{staging}/_code/{hash}/` unless that version is already there;
2. a Dagster Pipes session is opened on the staging container with dagster-azure's
   `PipesAzureBlobStorageContextInjector` / `PipesAzureBlobStorageMessageReader`; the job's
   parameters ride in the Pipes context (`extras`), encoded by `pipeline.spark.synapse_entry`;
3. the batch is POSTed to `{endpoint}/livyApi/versions/{version}/sparkPools/{pool}/batches`
   with the pool sizes and the Spark conf the jobs rely on (UTC, dynamic partition overwrite);
4. it is polled with backoff (1 s doubling to 15 s); new driver log lines go to the Dagster
   run's log on every poll, Pipes log messages arrive on their own; the job's report comes back
   as a Pipes custom message;
5. a batch that ends `dead`/`killed`/`error` raises `SynapseJobError` with its state, result and
   the last 50 driver log lines; if the step is interrupted (run terminated, Ctrl-C) or raises
   while the batch runs, the batch is cancelled with DELETE before the error propagates.

The Livy calls and the staging storage (code upload) are `pipeline.azure.livy`'s; this module is
the Dagster side: the resource, the batch body, following a batch and the Pipes session.

The jobs' own writes are day-atomic (`pipeline.lake.spark`), so a failed or cancelled batch
leaves no partial day behind.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dagster as dg
from dagster_azure.pipes import (
    PipesAzureBlobStorageContextInjector,
    PipesAzureBlobStorageMessageReader,
)

from pipeline.azure.credentials import azure_credential
from pipeline.azure.livy import (
    TERMINAL_STATES,
    LivyClient,
    StagingLocation,
    SynapseJobError,
    UploadedCode,
    staging_blob_service,
    upload_code,
)
from pipeline.resources.spark import SparkStep, spark_config
from pipeline.settings import Settings
from pipeline.spark import packaging, synapse_entry
from pipeline.spark import steps as spark_steps

T = TypeVar("T")

# Synapse node sizes (vCores, memory a Spark process may use of the node).
NODE_SIZES: dict[str, tuple[int, str]] = {
    "small": (4, "28g"),
    "medium": (8, "56g"),
    "large": (16, "112g"),
}
LOG_TAIL_LINES = 50
# Spark settings that are the pool's business, not ours, when reusing the local session's conf.
_NOT_FOR_THE_POOL = ("spark.master", "spark.remote", "spark.app.name", "spark.driver.memory")


class CatchUpBlobMessageReader(PipesAzureBlobStorageMessageReader):
    """dagster-azure's Pipes blob reader, reading every chunk already written on each poll.

    The stock reader fetches one chunk per poll (every ~2 s) while the job writes one per second
    when it has something to say; after the batch ends it keeps reading for only 10 s, so a
    chatty job's last chunks (with the report) could be dropped. This one catches up at once.
    """

    def download_messages(self, cursor: int | None, params: Any) -> tuple[int, str] | None:
        chunks = []
        while chunk := self.download_messages_chunk(self.counter, params):
            chunks.append(chunk)
            self.counter += 1
        return (self.counter, "\n".join(chunks)) if chunks else None


class SynapseJobRunner(dg.ConfigurableResource):
    """Runs a named Spark job as a Livy batch on a Synapse Spark pool, reporting through Pipes."""

    endpoint: str  # https://{workspace}.dev.azuresynapse.net
    spark_pool: str
    livy_api_version: str = "2020-12-01"
    staging_url: str  # abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH
    executor_size: str = "small"
    executors: int = 2
    spark_conf: dict[str, str] = {}  # noqa: RUF012 (pydantic copies defaults per instance)
    poll_initial_s: float = 1.0
    poll_max_s: float = 15.0
    # Pipes chunks are read this often (seconds): log lines from the job reach the run quickly.
    pipes_read_interval_s: float = 1.0

    def run_steps(
        self, steps: Sequence[SparkStep], progress: Callable[[str], None] | None = None
    ) -> list[Any]:
        """Run the steps in order as ONE Livy batch (one pool start); their reports, in order.

        Progress arrives through the driver log, which is streamed into the run.
        """
        named = [(synapse_entry.job_name(job), params) for job, params in steps]
        return self.run(spark_steps.run, steps=named)

    def run(self, job: Callable[..., T], **params: Any) -> T:
        """Run `job(spark, **params)` on the pool as one Livy batch; return its report."""
        context = dg.AssetExecutionContext.get()
        name = synapse_entry.job_name(job)
        encoded = synapse_entry.encode(params)
        livy = LivyClient(self.endpoint, self.spark_pool, self.livy_api_version, azure_credential())
        livy.check_identity()
        livy.check_access()
        location = StagingLocation.parse(self.staging_url)
        service = staging_blob_service(location)
        code = upload_code(service, location, packaging.current_package())
        context.log.info(
            f"synapse: code version {code.version} "
            f"{'uploaded to' if code.uploaded else 'already at'} {code.entry_url.rsplit('/', 1)[0]}"
        )
        with dg.open_pipes_session(
            context=context,
            context_injector=PipesAzureBlobStorageContextInjector(
                container=location.container, client=service
            ),
            message_reader=CatchUpBlobMessageReader(
                container=location.container, client=service, interval=self.pipes_read_interval_s
            ),
            extras={"job": name, "params": encoded},
        ) as session:
            bootstrap = session.get_bootstrap_cli_arguments()
            args = ["--job", name, "--pipes-account-url", location.account_url]
            for flag, value in bootstrap.items():
                args += [flag, value]
            body = self.batch_body(name, code, args, context.run_id)
            batch = livy.submit(body)
            batch_id = int(batch["id"])
            context.log.info(
                f"synapse: submitted {name} as Livy batch {batch_id} on pool {self.spark_pool} "
                f"({self.executors} x {self.executor_size} executors)"
            )
            self._follow(livy, batch_id, batch, context)
        for message in session.get_custom_messages():
            if isinstance(message, dict) and synapse_entry.REPORT_KEY in message:
                return synapse_entry.decode(message[synapse_entry.REPORT_KEY])
        raise SynapseJobError(
            f"Livy batch {batch_id} ({name}) succeeded but sent no report through Pipes: see the "
            "'[pipes]' warnings above and the batch's driver log"
        )

    def batch_body(
        self, name: str, code: UploadedCode, args: list[str], run_id: str
    ) -> dict[str, Any]:
        """The Livy POST body: entry script, code zip, args, conf and the pool sizes."""
        cores, memory = NODE_SIZES[self.executor_size.lower()]
        short = name.split(":")[0].rsplit(".", 1)[-1]
        return {
            "name": f"beacon-{short}-{run_id[:8]}",
            "file": code.entry_url,
            "args": args,
            "pyFiles": [code.zip_url],
            "conf": dict(self.spark_conf),
            "driverMemory": memory,
            "driverCores": cores,
            "executorMemory": memory,
            "executorCores": cores,
            "numExecutors": self.executors,
            "tags": {"dagster_run_id": run_id, "beacon_job": name, "code_version": code.version},
        }

    def _follow(self, livy: LivyClient, batch_id: int, batch: dict[str, Any], context: Any) -> None:
        """Poll until the batch ends, streaming its driver log; cancel it if we are stopped."""
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        offset = 0
        delay = self.poll_initial_s
        state = str(batch.get("state", "not_started"))
        try:
            while True:
                if state not in TERMINAL_STATES:
                    time.sleep(delay)
                    delay = min(delay * 2, self.poll_max_s)
                    batch = livy.get(batch_id)
                offset = self._stream_log(livy, batch_id, offset, tail, context)
                new_state = str(batch.get("state"))
                if new_state != state:
                    context.log.info(f"synapse: batch {batch_id} is {new_state}")
                    state = new_state
                if state in TERMINAL_STATES:
                    break
        except BaseException:
            # Run terminated (DagsterExecutionInterruptedError), Ctrl-C, or an error while
            # following: do not leave the batch running and billing.
            context.log.warning(f"synapse: cancelling Livy batch {batch_id}")
            try:
                livy.cancel(batch_id)
            except Exception as error:  # the original error matters more
                context.log.error(f"synapse: could not cancel batch {batch_id}: {error}")
            raise
        if state != "success":
            raise SynapseJobError(
                f"Livy batch {batch_id} on pool {self.spark_pool} ended {state} "
                f"(result {batch.get('result', 'unknown')}); last {len(tail)} driver log "
                "line(s):\n" + "\n".join(tail)
            )

    @staticmethod
    def _stream_log(
        livy: LivyClient,
        batch_id: int,
        offset: int,
        tail: collections.deque[str],
        context: Any,
    ) -> int:
        while True:
            lines, total = livy.log(batch_id, offset)
            if lines:
                context.log.info(f"synapse batch {batch_id} driver log:\n" + "\n".join(lines))
                tail.extend(lines)
            offset += len(lines)
            if not lines or offset >= total:
                return offset


def synapse_runner(settings: Settings) -> SynapseJobRunner:
    """The runner for `BEACON_SPARK=synapse`, from validated settings."""
    conf = {
        key: str(value)
        for key, value in spark_config(settings).items()
        if key not in _NOT_FOR_THE_POOL
    }
    return SynapseJobRunner(
        endpoint=settings.synapse_endpoint
        or f"https://{settings.synapse_workspace}.dev.azuresynapse.net",
        spark_pool=settings.synapse_spark_pool or "",
        livy_api_version=settings.synapse_livy_api_version,
        staging_url=settings.synapse_staging_url or settings.lake_url,
        executor_size=settings.synapse_executor_size,
        executors=settings.synapse_executors,
        spark_conf=conf,
    )
