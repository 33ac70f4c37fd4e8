"""Runs the pipeline's Spark jobs on an Azure Synapse Spark pool: Livy batches + Dagster Pipes.

`SynapseJobRunner.run_steps(steps)` has the contract of the local `SparkJobRunner.run_steps`: it
runs each `job(spark, **params)` in order and returns their reports, only the Spark session lives
on the pool. One call is one Livy batch (`run`, running `pipeline.spark_jobs.steps`):

1. the code (`pipeline` + `dagster_pipes` as a zip, and an entry script; `pipeline.packaging`)
   is uploaded to `{staging}/_code/{hash}/` unless that version is already there;
2. a Dagster Pipes session is opened on the staging container with dagster-azure's
   `PipesAzureBlobStorageContextInjector` / `PipesAzureBlobStorageMessageReader`; the job's
   parameters ride in the Pipes context (`extras`), encoded by `pipeline.synapse_entry`;
3. the batch is POSTed to `{endpoint}/livyApi/versions/{version}/sparkPools/{pool}/batches`
   with the pool sizes and the Spark conf the jobs rely on (UTC, dynamic partition overwrite);
4. it is polled with backoff (1 s doubling to 15 s); new driver log lines go to the Dagster
   run's log on every poll, Pipes log messages arrive on their own; the job's report comes back
   as a Pipes custom message;
5. a batch that ends `dead`/`killed`/`error` raises `SynapseJobError` with its state, result and
   the last 50 driver log lines; if the step is interrupted (run terminated, Ctrl-C) or raises
   while the batch runs, the batch is cancelled with DELETE before the error propagates.

HTTP goes through azure-core (`PipelineClient` with a bearer-token policy for the Synapse scope
and a retry policy for 429/5xx) rather than `azure-synapse-spark`: that SDK was last released in
2021, is not installed, and five JSON calls do not need it. A POST (a new batch) is retried only
on 429/503, when Livy has not created the batch, so a retry never starts the job twice.

The jobs' own writes are day-atomic (`pipeline.spark_jobs.lake`), so a failed or cancelled batch
leaves no partial day behind.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dagster as dg
from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceExistsError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy
from azure.core.rest import HttpRequest, HttpResponse
from azure.storage.blob import BlobServiceClient, ContentSettings
from dagster_azure.pipes import (
    PipesAzureBlobStorageContextInjector,
    PipesAzureBlobStorageMessageReader,
)

from pipeline import packaging, synapse_entry
from pipeline.azure.credentials import (
    SYNAPSE_SCOPE,
    AzureAccessError,
    azure_credential,
    first_line,
    usable_token,
)
from pipeline.resources.spark import SparkStep, spark_config
from pipeline.settings import Settings
from pipeline.spark_jobs import steps as spark_steps
from pipeline.storage import CONNECTION_STRING_ENV

T = TypeVar("T")

# Synapse node sizes (vCores, memory a Spark process may use of the node).
NODE_SIZES: dict[str, tuple[int, str]] = {
    "small": (4, "28g"),
    "medium": (8, "56g"),
    "large": (16, "112g"),
}
TERMINAL_STATES = frozenset({"success", "dead", "killed", "error"})
LOG_TAIL_LINES = 50
LOG_PAGE = 500
CODE_FOLDER = "_code"
# Spark settings that are the pool's business, not ours, when reusing the local session's conf.
_NOT_FOR_THE_POOL = ("spark.master", "spark.remote", "spark.app.name", "spark.driver.memory")


class SynapseJobError(RuntimeError):
    """A Livy batch failed, was cancelled, or was refused; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Staging storage: where the code and the Pipes messages go.


_ABFSS = re.compile(
    r"^abfss?://(?P<container>[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])?)@(?P<account>[a-z0-9]{3,24})"
    r"\.(?:dfs|blob)\.core\.windows\.net(?:/(?P<prefix>.*))?$"
)


@dataclass(frozen=True)
class StagingLocation:
    """A folder in a storage account the pool can read: `abfss://CONTAINER@ACCOUNT.dfs…/PREFIX`."""

    container: str
    account: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> StagingLocation:
        match = _ABFSS.match(url.strip())
        if not match:
            raise ValueError(
                f"{url!r}: expected abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH, a place "
                "the Spark pool can read"
            )
        return cls(match["container"], match["account"], (match["prefix"] or "").strip("/"))

    @property
    def account_url(self) -> str:
        return f"https://{self.account}.blob.core.windows.net"

    def blob_name(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def abfss(self, blob_name: str) -> str:
        return f"abfss://{self.container}@{self.account}.dfs.core.windows.net/{blob_name}"


def staging_blob_service(location: StagingLocation) -> BlobServiceClient:
    """Blob API client for the staging account.

    `AZURE_STORAGE_CONNECTION_STRING` wins when set (Azurite in tests; its dfs endpoint does not
    work, so this is blob API only); otherwise the pipeline's Azure identity, which needs
    Storage Blob Data Contributor on the container. Replace with pipeline/storage.py's URL →
    client helper once it exists.
    """
    connection_string = os.environ.get(CONNECTION_STRING_ENV)
    if connection_string:
        return BlobServiceClient.from_connection_string(connection_string)
    return BlobServiceClient(location.account_url, credential=azure_credential())


@dataclass(frozen=True)
class UploadedCode:
    version: str
    entry_url: str  # abfss://…/_code/{hash}/entry.py, the batch's `file`
    zip_url: str  # abfss://…/_code/{hash}/pipeline.zip, its `pyFiles`
    uploaded: bool  # False when this version was already there


def upload_code(
    service: BlobServiceClient, location: StagingLocation, package: packaging.CodePackage
) -> UploadedCode:
    """Put the package in `{staging}/_code/{version}/` unless it is there already.

    The entry script is written last and only if absent, so its presence means a complete
    upload; two runs racing upload identical bytes.
    """
    folder = location.blob_name(CODE_FOLDER, package.version)
    zip_name, entry_name = f"{folder}/{packaging.ZIP_NAME}", f"{folder}/{packaging.ENTRY_NAME}"
    container = service.get_container_client(location.container)
    try:
        uploaded = not container.get_blob_client(entry_name).exists()
        if uploaded:
            container.upload_blob(zip_name, package.zip_bytes, overwrite=True)
            # Another run may have uploaded the same version meanwhile: same bytes, fine.
            with contextlib.suppress(ResourceExistsError):
                container.upload_blob(
                    entry_name,
                    package.entry_bytes,
                    content_settings=ContentSettings(content_type="text/x-python"),
                )
    except ClientAuthenticationError as error:
        raise AzureAccessError(
            f"cannot reach the staging container {location.container} in {location.account}: "
            f"{first_line(error)}. Log in (az login) or give the Dagster host an identity."
        ) from error
    except HttpResponseError as error:
        raise AzureAccessError(
            f"uploading the code to {location.abfss(folder)} failed ({error.status_code} "
            f"{error.error_code or ''}): the identity needs Storage Blob Data Contributor on "
            f"container {location.container} of account {location.account}, and the container "
            "must exist (BEACON_SYNAPSE_STAGING_URL)"
        ) from error
    return UploadedCode(
        package.version, location.abfss(entry_name), location.abfss(zip_name), uploaded
    )


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


# ---------------------------------------------------------------------------------------------
# Livy over azure-core.


class _LivyRetryPolicy(RetryPolicy):
    """GET/DELETE retry on 408/429/5xx; a POST (a new batch) only on 429 and 503, when Livy did
    not create it: after a 500 the batch may exist, and retrying would run the job twice."""

    def _is_method_retryable(self, settings: Any, request: Any, response: Any = None) -> bool:
        if request.method.upper() == "POST":
            return response is not None and response.status_code in (429, 503)
        return super()._is_method_retryable(settings, request, response)


class LivyClient:
    """The Livy batches API of one Synapse Spark pool."""

    def __init__(
        self,
        endpoint: str,
        pool: str,
        api_version: str,
        credential: TokenCredential,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self.credential = credential
        self.batches_url = (
            f"{endpoint.rstrip('/')}/livyApi/versions/{api_version}"
            f"/sparkPools/{urllib.parse.quote(pool)}/batches"
        )
        self.where = f"Spark pool {pool} at {endpoint}"
        self.client: PipelineClient = PipelineClient(
            base_url=endpoint.rstrip("/"),
            policies=[
                _LivyRetryPolicy(retry_total=5, retry_backoff_factor=retry_backoff_s),
                BearerTokenCredentialPolicy(credential, SYNAPSE_SCOPE),
            ],
        )

    def check_identity(self) -> None:
        """Fail before any upload when no usable Synapse token can be had."""
        usable_token(
            self.credential,
            SYNAPSE_SCOPE,
            unavailable=(
                f"no Azure identity could get a token for Synapse ({SYNAPSE_SCOPE}): "
                "{error}. Run `az login`, or give the Dagster host a managed "
                "identity or service principal (AZURE_CLIENT_ID, AZURE_TENANT_ID, …) with the "
                "Synapse Compute Operator role on the workspace."
            ),
            expired=(
                "the Azure identity handed out an expired token for Synapse (expired {expired}): "
                "run `az login` again (or check the managed identity and this host's clock)"
            ),
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> HttpResponse:
        request = HttpRequest(method, self.batches_url + path, **kwargs)
        try:
            response = self.client.send_request(request)
        except ClientAuthenticationError as error:
            raise AzureAccessError(
                f"no Azure identity could get a token for Synapse: {first_line(error)}"
            ) from error
        if response.status_code in (401, 403):
            raise AzureAccessError(
                f"{method} {self.where} was refused ({response.status_code}: "
                f"{_short(response.text())}): the identity needs the Synapse Compute Operator "
                "role (or Synapse Administrator) on the workspace or pool"
            )
        if response.status_code == 404 and not path:  # the batches collection itself
            raise SynapseJobError(
                f"{self.where} not found (404): check SYNAPSE_WORKSPACE / SYNAPSE_ENDPOINT and "
                "SYNAPSE_SPARK_POOL"
            )
        if response.status_code >= 400:
            raise SynapseJobError(
                f"{method} {self.where}{path} failed with {response.status_code}: "
                f"{_short(response.text())}"
            )
        return response

    def check_access(self) -> None:
        """List one batch: proves the pool exists and the identity may use it, before uploads."""
        self._send("GET", "", params={"from": 0, "size": 1})

    def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._send("POST", "", json=dict(body), params={"detailed": "true"}).json()

    def get(self, batch_id: int) -> dict[str, Any]:
        return self._send("GET", f"/{batch_id}", params={"detailed": "true"}).json()

    def log(self, batch_id: int, start: int, size: int = LOG_PAGE) -> tuple[list[str], int]:
        """Driver log lines from `start`, and the log's total length so far."""
        answer = self._send("GET", f"/{batch_id}/log", params={"from": start, "size": size}).json()
        lines = [str(line) for line in answer.get("log") or []]
        return lines, int(answer.get("total", start + len(lines)))

    def cancel(self, batch_id: int) -> None:
        self._send("DELETE", f"/{batch_id}")


# ---------------------------------------------------------------------------------------------
# The resource.


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


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
