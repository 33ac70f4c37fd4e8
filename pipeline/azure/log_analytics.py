"""Pull rows out of a Log Analytics workspace with azure-monitor-query, within the service limits.

The query API answers at most 500,000 rows and ~100 MiB per result, runs a query for at most
10 minutes and throttles (429) above 200 requests / 30 s or 5 concurrent queries per user. A
time range is therefore pulled in slices: the rows are counted first per 5-minute bin, the bins
are packed into slices of at most `max_rows_per_slice` rows, and a slice that still comes back
partial (truncated), or fails on the server, is halved and pulled again. Throttling and server
errors are retried by azure-core's RetryPolicy, which honours `Retry-After`; this module only
counts them and turns what cannot be recovered into errors that say what to fix.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult, LogsTable

from pipeline.azure.credentials import AzureAccessError, azure_credential, first_line
from pipeline.azure.log import Log

DEFAULT_ENDPOINT = "https://api.loganalytics.io"
SERVICE_ROW_LIMIT = 500_000
# The service's maximum; the default (3 min) is too short for a slice of 400,000 rows.
SERVER_TIMEOUT_S = 600
# azure-core retries 429 (after Retry-After) and 500/503/504 on POST: waits 0, 4, 8, 16, 32 s.
RETRY_TOTAL = 5
RETRY_BACKOFF_S = 2.0
RETRY_BACKOFF_MAX_S = 60.0
COUNT_BIN = dt.timedelta(minutes=5)
# Halving stops here: more rows than the limit within one second is not a slicing problem.
MIN_SLICE = dt.timedelta(seconds=1)
# A slice that keeps failing on the server is halved this many times, then the pull gives up:
# a service that is down must not turn one day into thousands of queries.
SERVER_ERROR_SPLITS = 2


class LogAnalyticsError(RuntimeError):
    """A query failed for a reason retrying will not fix; the message says what to do."""


class TableNotFoundError(LogAnalyticsError):
    """The workspace has no such table (the service's SemanticError 'Failed to resolve table')."""


class ResultTruncatedError(LogAnalyticsError):
    """The result was partial (truncated at the row or size limit)."""


class ServiceFailureError(LogAnalyticsError):
    """The server kept failing (5xx after retries, or no answer in time)."""


@dataclass
class QueryStats:
    """What it took to pull: queries sent, throttling and server errors met, slices, halvings."""

    queries: int = 0
    throttled: int = 0  # 429 answers (each retried after its Retry-After, or the pull failed)
    retry_after_s: float = 0.0  # sum of the Retry-After the service asked for
    server_errors: int = 0  # 5xx answers
    slices: int = 0
    halvings: int = 0
    rows: int = 0
    counted: int = 0
    slice_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def retries(self) -> int:
        return self.throttled + self.server_errors


@dataclass(frozen=True)
class Slice:
    start: dt.datetime
    end: dt.datetime
    expected_rows: int | None = None
    server_failures: int = 0

    def halves(self, failed_on_server: bool) -> tuple[Slice, Slice]:
        # timedelta halves to whole microseconds: exact in the ISO literals the query carries.
        middle = self.start + (self.end - self.start) / 2
        failures = self.server_failures + int(failed_on_server)
        return Slice(self.start, middle, None, failures), Slice(middle, self.end, None, failures)


class _RefuseExpiredTokens:
    """Wraps the credential so an already expired token fails here, naming the identity to renew,
    instead of being sent and refused by the service with a vaguer 401."""

    def __init__(self, inner: TokenCredential) -> None:
        self._inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token = self._inner.get_token(*scopes, **kwargs)
        if token.expires_on <= time.time():
            expired = dt.datetime.fromtimestamp(token.expires_on, dt.UTC).isoformat()
            raise ClientAuthenticationError(
                f"the Azure identity handed out a token for {', '.join(scopes)} that expired at "
                f"{expired}"
            )
        return token


def kql_datetime(value: dt.datetime) -> str:
    """A KQL datetime literal in UTC, e.g. `datetime(2026-11-20T00:00:00.000000Z)`."""
    return f"datetime({value.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')}Z)"


def kql_string(value: str) -> str:
    """A KQL string literal (backslash escapes, as in JSON)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LogAnalytics:
    """One workspace behind the real LogsQueryClient, with error translation and counters."""

    def __init__(
        self,
        workspace_id: str,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        credential: TokenCredential | None = None,
        retry_total: int = RETRY_TOTAL,
        retry_backoff_s: float = RETRY_BACKOFF_S,
        server_timeout_s: int = SERVER_TIMEOUT_S,
    ) -> None:
        self.workspace_id = workspace_id
        self.endpoint = endpoint.rstrip("/")
        self.server_timeout_s = server_timeout_s
        self.retry_total = retry_total
        self.stats = QueryStats()
        # The token audience defaults to the endpoint (https://api.loganalytics.io/.default).
        self.client = LogsQueryClient(
            _RefuseExpiredTokens(credential or azure_credential()),
            endpoint=self.endpoint,
            retry_total=retry_total,
            retry_backoff_factor=retry_backoff_s,
            retry_backoff_max=RETRY_BACKOFF_MAX_S,
            # The service may take server_timeout_s to answer; do not give up before it does.
            read_timeout=server_timeout_s + 30,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> LogAnalytics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count_response(self, response: Any) -> None:
        status = response.http_response.status_code
        if status == 429:
            self.stats.throttled += 1
            self.stats.retry_after_s += float(
                response.http_response.headers.get("Retry-After") or 0
            )
        elif status >= 500:
            self.stats.server_errors += 1

    def query(self, query: str, start: dt.datetime, end: dt.datetime) -> LogsTable:
        """Run `query` over [start, end); the primary table, or an error that names the fix."""
        self.stats.queries += 1
        try:
            result = self.client.query_workspace(
                self.workspace_id,
                query,
                timespan=(start, end),
                server_timeout=self.server_timeout_s,
                # Called for every attempt, retries included (the hook runs after RetryPolicy).
                raw_response_hook=self._count_response,
            )
        except HttpResponseError as error:
            # A credential failure arrives re-wrapped by the SDK as a response-less
            # HttpResponseError whose context is the ClientAuthenticationError.
            auth = _authentication_failure(error)
            if auth is not None:
                raise AzureAccessError(
                    f"Log Analytics ({self.endpoint}): no usable Azure identity "
                    f"({_compact(auth)}). Sign in again with `az login`, or give the "
                    "pipeline a managed identity or service principal (AZURE_CLIENT_ID, "
                    "AZURE_TENANT_ID, …) that has the Log Analytics Reader role on workspace "
                    f"{self.workspace_id}."
                ) from error
            raise self._translate(error, query) from error
        except (ServiceResponseError, ServiceRequestError) as error:
            raise ServiceFailureError(
                f"no answer from {self.endpoint}: {first_line(error)}"
            ) from error
        if isinstance(result, LogsQueryPartialResult):
            detail = _partial_detail(result)
            raise ResultTruncatedError(detail)
        if not result.tables:
            raise LogAnalyticsError(f"Log Analytics answered without a result table for: {query}")
        return result.tables[0]

    def _translate(self, error: HttpResponseError, query: str) -> Exception:
        status = error.status_code or 0
        detail = _service_message(error)
        if status in (401, 403):
            return AzureAccessError(
                f"Log Analytics ({self.endpoint}) refused the identity (HTTP {status}: {detail}). "
                f"Give it the Log Analytics Reader role on workspace {self.workspace_id}, and "
                "check LOG_ANALYTICS_WORKSPACE_ID and LOG_ANALYTICS_ENDPOINT (the token's "
                "audience is the endpoint)."
            )
        if status == 404:
            return LogAnalyticsError(
                f"Log Analytics ({self.endpoint}) has no workspace {self.workspace_id} (HTTP 404: "
                f"{detail}): set LOG_ANALYTICS_WORKSPACE_ID to the Workspace ID (a GUID) shown "
                "on the workspace's Overview page."
            )
        if status == 429:
            return LogAnalyticsError(
                f"Log Analytics still throttled the query (HTTP 429) after {self.retry_total} "
                "retries that honoured its Retry-After: the workspace's query limits (200 "
                "requests per 30 s, 5 concurrent queries per user) are used up. Run fewer "
                "pulls at once or retry later."
            )
        if status >= 500:
            return ServiceFailureError(f"HTTP {status} after {self.retry_total} retries: {detail}")
        if status == 400 and "Failed to resolve table" in detail:
            return TableNotFoundError(f"workspace {self.workspace_id} has no such table: {detail}")
        return LogAnalyticsError(
            f"Log Analytics rejected the query (HTTP {status}: {detail}). Query: {query}"
        )

    # --- slicing --------------------------------------------------------------------------------

    def count_by_bin(
        self, base_query: str, start: dt.datetime, end: dt.datetime
    ) -> dict[dt.datetime, int]:
        """Rows of `base_query` per 5-minute bin of TimeGenerated (bins without rows absent)."""
        minutes = int(COUNT_BIN.total_seconds() // 60)
        try:
            table = self.query(
                f"{base_query} | summarize count() by bin(TimeGenerated, {minutes}m)", start, end
            )
        except (ResultTruncatedError, ServiceFailureError) as error:
            raise LogAnalyticsError(
                f"Log Analytics could not count the rows of {start:%Y-%m-%d %H:%M}–"
                f"{end:%Y-%m-%d %H:%M} UTC ({error}); retry later."
            ) from error
        position = {name: i for i, name in enumerate(table.columns)}
        counts: dict[dt.datetime, int] = {}
        for row in table.rows:
            stamp = _as_datetime(row[position["TimeGenerated"]])
            counts[stamp] = counts.get(stamp, 0) + int(row[position["count_"]])
        return counts

    def pull(
        self,
        base_query: str,
        columns: Sequence[str],
        start: dt.datetime,
        end: dt.datetime,
        max_rows_per_slice: int,
        on_rows: Callable[[LogsTable], None],
        log: Log,
    ) -> QueryStats:
        """Every row of `base_query` in [start, end), projected to `columns`, slice by slice.

        `base_query` is a table and its filters (`T | where …`); each slice adds its own time
        bounds. `on_rows` receives each complete slice's table; a partial result is never passed
        on. Raises LogAnalyticsError / AzureAccessError when a slice cannot be recovered.
        """
        counts = self.count_by_bin(base_query, start, end)
        self.stats.counted = sum(counts.values())
        pending = list(reversed(plan_slices(counts, start, end, max_rows_per_slice)))
        log.info(
            f"Log Analytics: {self.stats.counted} rows counted in {start:%Y-%m-%d %H:%M}–"
            f"{end:%Y-%m-%d %H:%M} UTC, planned {len(pending)} slice(s) of at most "
            f"{max_rows_per_slice} rows"
        )
        project = ", ".join(columns)
        while pending:
            piece = pending.pop()
            query = (
                f"{base_query} | where TimeGenerated >= {kql_datetime(piece.start)} and "
                f"TimeGenerated < {kql_datetime(piece.end)} | project {project}"
            )
            started = time.monotonic()
            try:
                table = self.query(query, piece.start, piece.end)
            except (ResultTruncatedError, ServiceFailureError) as error:
                too_large = isinstance(error, ResultTruncatedError)
                if piece.end - piece.start < 2 * MIN_SLICE:
                    raise LogAnalyticsError(
                        f"Log Analytics cannot return {_span(piece)} in one query ({error}) even "
                        f"as a {(piece.end - piece.start).total_seconds():g}-second slice."
                    ) from error
                if not too_large and piece.server_failures >= SERVER_ERROR_SPLITS:
                    raise LogAnalyticsError(
                        f"Log Analytics kept failing for {_span(piece)} ({error}), also after "
                        f"halving the slice {SERVER_ERROR_SPLITS} times: the service is "
                        "unavailable; retry later."
                    ) from error
                first, second = piece.halves(failed_on_server=not too_large)
                pending += [second, first]
                self.stats.halvings += 1
                log.warning(
                    f"Log Analytics: slice {_span(piece)} "
                    f"{'was truncated' if too_large else 'failed'} ({error}); halving it"
                )
                continue
            seconds = time.monotonic() - started
            self.stats.slices += 1
            self.stats.rows += len(table.rows)
            self.stats.slice_log.append(
                {"start": piece.start.isoformat(), "rows": len(table.rows), "seconds": seconds}
            )
            log.info(
                f"Log Analytics: slice {_span(piece)}: {len(table.rows)} rows in {seconds:.1f} s"
            )
            on_rows(table)
        return self.stats


def plan_slices(
    counts: dict[dt.datetime, int],
    start: dt.datetime,
    end: dt.datetime,
    max_rows: int,
    bin_size: dt.timedelta = COUNT_BIN,
) -> list[Slice]:
    """Pack consecutive count bins into slices of at most `max_rows` rows covering [start, end).

    A single bin above `max_rows` becomes a slice of its own (the pull halves it if the service
    truncates it). Empty bins join their neighbours, so the slices always tile the range.
    """
    slices: list[Slice] = []
    slice_start, rows = start, 0
    cursor = start
    while cursor < end:
        following = min(cursor + bin_size, end)
        in_bin = counts.get(cursor, 0)
        if rows and rows + in_bin > max_rows:
            slices.append(Slice(slice_start, cursor, rows))
            slice_start, rows = cursor, 0
        rows += in_bin
        cursor = following
    if rows or not slices:
        slices.append(Slice(slice_start, end, rows))
    else:
        # Trailing empty bins belong to the last slice.
        last = slices.pop()
        slices.append(Slice(last.start, end, last.expected_rows))
    return slices


def _span(piece: Slice) -> str:
    return f"{piece.start:%Y-%m-%d %H:%M:%S.%f}–{piece.end:%H:%M:%S.%f} UTC"


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    text = str(value).removesuffix("Z")
    if "." in text:
        whole, fraction = text.split(".", 1)
        text = f"{whole}.{fraction[:6]}"
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _authentication_failure(error: BaseException) -> ClientAuthenticationError | None:
    """The credential error behind `error`, when no HTTP response was involved."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ClientAuthenticationError) and seen.response is None:
            return seen
        if getattr(seen, "response", None) is not None:
            return None
        seen = seen.__cause__ or seen.__context__
    return None


def _compact(error: BaseException) -> str:
    """The credential's message on one line: its first line, and what the identities that can
    work unattended (managed identity, Azure CLI) said; the other attempts are noise here."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = lines[:1] + [
        line
        for line in lines[1:]
        if line.startswith(("ManagedIdentityCredential", "AzureCliCredential"))
    ]
    return " ".join(" ".join(kept).split()) or type(error).__name__


def _service_message(error: HttpResponseError) -> str:
    """The service's own words: code and innermost message of its error body."""
    model = getattr(error, "model", None)
    code = getattr(model, "code", None)
    message = getattr(model, "message", None)
    if message:
        return f"{code}: {message}" if code else str(message)
    return first_line(error)


def _partial_detail(result: LogsQueryPartialResult) -> str:
    error = result.partial_error
    messages = []
    for detail in (getattr(error, "details", None) or [])[:3]:
        inner = dict(detail) if hasattr(detail, "keys") else detail
        while isinstance(inner, dict) and inner.get("innererror"):
            inner = inner["innererror"]
        if isinstance(inner, dict) and inner.get("message"):
            messages.append(str(inner["message"]))
    rows = sum(len(t.rows) for t in (result.partial_data or []))
    summary = "; ".join(messages) or (getattr(error, "message", None) or "partial result")
    return f"partial result with {rows} rows: {summary}"
