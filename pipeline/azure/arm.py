"""Azure Resource Manager (ARM) REST calls over azure-core, for any resource provider.

`ArmClient` is a `PipelineClient` on one ARM endpoint with `BearerTokenCredentialPolicy` for
that endpoint's audience (https://management.azure.com, or a sovereign cloud's `management.*`
host; `arm_scope`) and `RetryPolicy`, which honours `Retry-After` on 429 (ARM refills writes at
~10/s per principal) and retries 5xx; callers send GET, PUT and DELETE, safe to repeat. A
counting policy inside the retries records every attempt and every 429 (`ArmCounter`).

What a failure means depends on the resource (which setting or role to fix), so a provider's
client overrides `identity_error`, `unreachable_error` and `error_for`; `arm_error` and
`arm_detail` read ARM's `{"error": {"code", "message"}}` answers for them. The Sentinel client is
`pipeline.publish.watchlist.ArmWatchlistClient`.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from dataclasses import dataclass
from typing import Any

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    RetryPolicy,
    SansIOHTTPPolicy,
)
from azure.core.rest import HttpRequest, HttpResponse

from pipeline.azure.credentials import ARM_SCOPE, AzureAccessError, azure_credential, first_line

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
RETRY_TOTAL = 6
RETRY_BACKOFF_S = 2.0
RETRY_BACKOFF_MAX_S = 60


class ArmError(RuntimeError):
    """An ARM call failed; the message says which call and what ARM answered."""


def arm_scope(endpoint: str) -> str:
    """The token audience for an ARM endpoint: a sovereign cloud's own `management.*` host
    (e.g. https://management.chinacloudapi.cn), else the public cloud's (tests, proxies)."""
    host = (urllib.parse.urlsplit(endpoint).hostname or "").lower()
    return f"https://{host}/.default" if host.startswith("management.") else ARM_SCOPE


def arm_error(response: HttpResponse) -> tuple[str, str]:
    """(code, message) of ARM's `{"error": {"code", "message"}}`, or ('', the body's start)."""
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or ""), str(error.get("message") or "")
    except (ValueError, AttributeError):
        return "", (response.text() or "")[:300]


def arm_detail(response: HttpResponse) -> tuple[str, str]:
    """ARM's error code and the answer for a message: `HTTP 404 ResourceNotFound: …`."""
    code, message = arm_error(response)
    status = response.status_code
    return code, f"HTTP {status} {code}: {message}" if code else f"HTTP {status}: {message}"


@dataclass
class ArmCounter:
    """HTTP attempts (retries included), 429 answers and the Retry-After they asked for."""

    requests: int = 0
    throttled: int = 0
    retry_after_s: float = 0.0


class _CountingPolicy(SansIOHTTPPolicy):
    """Sits inside RetryPolicy, so it sees every attempt: counts requests and 429s."""

    def __init__(self, counter: ArmCounter) -> None:
        self.counter = counter

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:
        self.counter.requests += 1
        if response.http_response.status_code == 429:
            self.counter.throttled += 1
            # An HTTP-date Retry-After is counted as a throttle, not summed.
            with contextlib.suppress(ValueError):
                self.counter.retry_after_s += float(
                    response.http_response.headers.get("Retry-After") or 0
                )


class ArmClient:
    """One ARM endpoint and one resource provider's api-version."""

    def __init__(
        self,
        endpoint: str,
        api_version: str,
        credential: TokenCredential | None = None,
        *,
        retry_total: int = RETRY_TOTAL,
        retry_backoff_s: float = RETRY_BACKOFF_S,
        counter: ArmCounter | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.api_version = api_version
        self.credential = credential or azure_credential()
        self.retry_total = retry_total
        self.counter = counter if counter is not None else ArmCounter()
        self.scope = arm_scope(endpoint)
        self.client: PipelineClient = PipelineClient(
            base_url=endpoint.rstrip("/"),
            policies=[
                RetryPolicy(
                    retry_total=retry_total,
                    retry_backoff_factor=retry_backoff_s,
                    retry_backoff_max=RETRY_BACKOFF_MAX_S,
                ),
                BearerTokenCredentialPolicy(self.credential, self.scope),
                _CountingPolicy(self.counter),
            ],
        )

    def close(self) -> None:
        self.client.close()

    def send(self, method: str, url: str, what: str, **kwargs: Any) -> HttpResponse:
        """One ARM call (api-version added unless `url` has one); `what` names it in errors."""
        params = kwargs.pop("params", {})
        if "api-version=" not in url:
            params = {"api-version": self.api_version, **params}
        request = HttpRequest(method, url, params=params, **kwargs)
        try:
            return self.client.send_request(request)
        except ClientAuthenticationError as error:
            raise self.identity_error(error, what) from error
        except (ServiceRequestError, ServiceResponseError) as error:
            raise self.unreachable_error(error, what) from error

    def list_values(self, url: str, what: str) -> list[dict[str, Any]]:
        """Every `value` of a list answer, following `nextLink`."""
        values: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            response = self.send("GET", next_url, what)
            if response.status_code != 200:
                raise self.error_for(response, what)
            page = response.json()
            values.extend(page.get("value") or [])
            next_url = page.get("nextLink")
        return values

    # What went wrong, in the caller's terms: providers' clients override these.

    def identity_error(self, error: ClientAuthenticationError, what: str) -> Exception:
        return AzureAccessError(
            f"no Azure identity could get an ARM token to {what}: {first_line(error)}. Run "
            "`az login` (or fix the managed identity)."
        )

    def unreachable_error(self, error: Exception, what: str) -> Exception:
        return ArmError(f"no answer from ARM ({self.endpoint}) to {what}: {first_line(error)}")

    def error_for(self, response: HttpResponse, what: str) -> Exception:
        """The error to raise for an unexpected answer."""
        return ArmError(f"ARM failed to {what} ({arm_detail(response)[1]})")
