"""The Livy batches API of a Synapse Spark pool, and the staging storage its batches read code from.

`LivyClient` submits, polls, reads the driver log of and cancels batches. HTTP goes through
azure-core (`PipelineClient` with a bearer-token policy for the Synapse scope and a retry policy
for 429/5xx) rather than `azure-synapse-spark`: that SDK was last released in 2021, is not
installed, and five JSON calls do not need it. A POST (a new batch) is retried only on 429/503,
when Livy has not created the batch, so a retry never starts the job twice.

The staging folder (`StagingLocation`, an `abfss://` URL read by `pipeline.azure.storage.parse`) is
where the code goes (`upload_code`: `pipeline.spark.packaging`'s zip and entry script, once per
version under `_code/{hash}/`) and where the Dagster Pipes messages go; `staging_blob_service`
is its Blob API client. The Dagster side of a batch is `pipeline.resources.synapse`.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceExistsError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy
from azure.core.rest import HttpRequest, HttpResponse
from azure.storage.blob import BlobServiceClient, ContentSettings

from pipeline.azure import storage
from pipeline.azure.credentials import (
    SYNAPSE_SCOPE,
    AzureAccessError,
    azure_credential,
    first_line,
    usable_token,
)
from pipeline.spark import packaging

# Livy batch states after which a batch does not change.
TERMINAL_STATES = frozenset({"success", "dead", "killed", "error"})
LOG_PAGE = 500
CODE_FOLDER = "_code"


class SynapseJobError(RuntimeError):
    """A Livy batch failed, was cancelled, or was refused; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Staging storage: where the code and the Pipes messages go.


# A container name as Azure allows it: 3–63 of a-z, 0-9 and inner hyphens.
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])?")


@dataclass(frozen=True)
class StagingLocation:
    """A folder in a storage account the pool can read: `abfss://CONTAINER@ACCOUNT.dfs…/PREFIX`."""

    container: str
    account: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> StagingLocation:
        """`pipeline.azure.storage.parse`, narrowed to what the pool reads and `account_url`
        names: an abfss:// (or abfs://) URL on the account's public-cloud dfs or blob host."""
        text = url.strip()
        try:
            location: storage.RemoteLocation | None = storage.parse(text)
        except (ValueError, storage.StorageError):
            location = None
        if location is None or location.account is None or not _is_staging(text, location):
            raise ValueError(
                f"{url!r}: expected abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH, a place "
                "the Spark pool can read"
            )
        return cls(location.container, location.account, location.path)

    @property
    def account_url(self) -> str:
        return f"https://{self.account}.blob.core.windows.net"

    def blob_name(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def abfss(self, blob_name: str) -> str:
        return f"abfss://{self.container}@{self.account}.dfs.core.windows.net/{blob_name}"


def _is_staging(url: str, location: storage.RemoteLocation) -> bool:
    hosts = {f"{location.account}.{kind}.core.windows.net" for kind in ("dfs", "blob")}
    return (
        url.startswith(("abfss://", "abfs://"))
        and location.host in hosts
        and _CONTAINER.fullmatch(location.container) is not None
    )


def staging_blob_service(location: StagingLocation) -> BlobServiceClient:
    """Blob API client for the staging account.

    `AZURE_STORAGE_CONNECTION_STRING` wins when set (Azurite in tests; its dfs endpoint does not
    work, so this is blob API only); otherwise the pipeline's Azure identity, which needs
    Storage Blob Data Contributor on the container. Replace with pipeline/azure/storage.py's URL →
    client helper once it exists.
    """
    connection_string = os.environ.get(storage.CONNECTION_STRING_ENV)
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
        connect_timeout_s: float = 30.0,
        read_timeout_s: float = 120.0,
    ) -> None:
        self.credential = credential
        # Livy's control calls answer in seconds. azure-core's defaults (300 s each, on every one
        # of the retries) would keep a terminated run waiting half an hour to cancel its batch.
        self.timeouts = {"connection_timeout": connect_timeout_s, "read_timeout": read_timeout_s}
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
            response = self.client.send_request(request, **self.timeouts)
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


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
