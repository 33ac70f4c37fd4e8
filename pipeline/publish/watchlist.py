"""Publish the day's beacons to a Microsoft Sentinel watchlist through the ARM REST API.

One watchlist item per reported pair (SourceIP, DestinationIP, DestinationPort, Protocol), found
by its `PairKey` (the watchlist's itemsSearchKey) so re-runs update items instead of adding
them. A day's publication:

1. checks that the Azure identity can get an unexpired ARM token (before anything is written);
2. GETs the watchlist; when it is missing, creates it with PUT whose `rawContent` carries as
   many of the day's rows as fit under the service's 3.8 MB limit, and follows the
   `Azure-AsyncOperation` (201) until the upload Succeeded;
3. lists the items (paged by `nextLink`), indexes them by PairKey and removes duplicates of a
   key (left, say, by someone's manual upload);
4. PUTs each of the day's pairs that is new or changed, to the existing item's id or, for a new
   item, to uuid5(PairKey) (`watchlist_csv.item_id`); an item already reported on a later day is
   kept (a re-run of an old day never rolls the watchlist back) except for an earlier
   `FirstReported`;
5. DELETEs items whose `LastReported` is older than the retention.

Every step is idempotent, so a run that fails half-way (throttling, a lost token) is completed
by re-running it. Every cell is neutralised against spreadsheet formula injection
(`watchlist_csv.safe_cell`); `FirstReported`/`LastReported` are ISO dates the pipeline writes.

HTTP goes through the shared ARM client (`pipeline.azure.arm`: bearer token for the endpoint's
audience, retries honouring `Retry-After` on 429 and 5xx); every call here is a GET, PUT or
DELETE, safe to repeat. `ArmWatchlistClient` adds the watchlist calls and errors that name the
SENTINEL_* setting or the role to fix; `pipeline.publish.incidents` sends through it too.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.core.rest import HttpResponse

from pipeline.azure.arm import (
    DEFAULT_ARM_ENDPOINT,
    RETRY_BACKOFF_S,
    RETRY_TOTAL,
    ArmClient,
    ArmCounter,
    arm_detail,
    arm_error,
)
from pipeline.azure.credentials import AzureAccessError, first_line, usable_token
from pipeline.azure.log import Log
from pipeline.publish.watchlist_csv import COLUMNS, SEARCH_KEY, csv_text, item_id
from pipeline.settings import Settings

API_VERSION = "2025-09-01"
# The pipeline's own columns: the first and the latest day the pair was reported.
FIRST_REPORTED = "FirstReported"
LAST_REPORTED = "LastReported"
ITEM_COLUMNS = [*COLUMNS, FIRST_REPORTED, LAST_REPORTED]
# The service refuses rawContent of 3.8 MB; stay well below, since it is not documented whether
# MB means 10^6 or 2^20 bytes or how the service counts.
RAW_CONTENT_BUDGET = 3_500_000
PROVIDER = "Beaconing pipeline (Dagster)"
SOURCE = "beaconing-candidates.csv"
LABELS = ["beaconing", "network", "dagster"]
# How long a watchlist upload (201 + Azure-AsyncOperation) may stay InProgress.
UPLOAD_TIMEOUT_S = 600.0
POLL_MAX_S = 30.0
# ARM's 404 codes for a container of the watchlist (as opposed to the watchlist itself).
MISSING_CONTAINER_CODES = {
    "ResourceGroupNotFound": "resource group",
    "SubscriptionNotFound": "subscription",
    "InvalidSubscriptionId": "subscription",
    "ResourceNotFound": "workspace",
    "WorkspaceNotFound": "workspace",
    "ParentResourceNotFound": "workspace",
}


class WatchlistPublishError(RuntimeError):
    """Publishing failed for a reason the message names; a re-run completes the day."""


@dataclass(frozen=True)
class WatchlistTarget:
    """Where the watchlist lives: the Sentinel workspace and the alias."""

    subscription_id: str
    resource_group: str
    workspace_name: str
    alias: str
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT

    @classmethod
    def from_settings(cls, settings: Settings) -> WatchlistTarget:
        if not settings.sentinel_configured:
            raise ValueError("Sentinel is not configured (SENTINEL_* settings)")
        return cls(
            subscription_id=str(settings.sentinel_subscription_id),
            resource_group=str(settings.sentinel_resource_group),
            workspace_name=str(settings.sentinel_workspace_name),
            alias=settings.watchlist_alias,
            arm_endpoint=settings.sentinel_arm_endpoint or DEFAULT_ARM_ENDPOINT,
        )

    @property
    def workspace_path(self) -> str:
        """The Sentinel (Log Analytics) workspace's ARM resource id."""
        quote = urllib.parse.quote
        return (
            f"/subscriptions/{quote(self.subscription_id)}"
            f"/resourceGroups/{quote(self.resource_group)}"
            "/providers/Microsoft.OperationalInsights"
            f"/workspaces/{quote(self.workspace_name)}"
        )

    @property
    def path(self) -> str:
        """The watchlist's ARM resource id."""
        return (
            f"{self.workspace_path}/providers/Microsoft.SecurityInsights/watchlists/"
            f"{urllib.parse.quote(self.alias)}"
        )

    @property
    def url(self) -> str:
        return self.arm_endpoint.rstrip("/") + self.path

    def describe(self) -> str:
        return (
            f"watchlist '{self.alias}' in workspace '{self.workspace_name}' (resource group "
            f"'{self.resource_group}', subscription {self.subscription_id})"
        )


@dataclass
class PublishStats:
    """What one day's publication did, and what it took."""

    day: str = ""
    rows: int = 0  # the day's reported pairs
    created_watchlist: bool = False
    uploaded_in_raw_content: int = 0  # items created by the watchlist's first upload
    upserted: int = 0  # items created or updated (PUT, or the first upload)
    unchanged: int = 0  # items already holding exactly the day's values
    kept_newer: int = 0  # items already reported on a later day, left as they are
    deleted: int = 0  # items past the retention
    duplicates_removed: int = 0  # extra items with a PairKey that already had one
    requests: int = 0  # HTTP attempts, retries included
    throttled: int = 0  # 429 answers (each retried after its Retry-After)
    retry_after_s: float = 0.0
    upload_polls: int = 0

    def as_row(self) -> dict[str, Any]:
        return {
            "date": self.day,
            "pairs": self.rows,
            "upserted": self.upserted,
            "unchanged": self.unchanged,
            "kept_newer": self.kept_newer,
            "deleted": self.deleted + self.duplicates_removed,
            "requests": self.requests,
            "throttled": self.throttled,
        }


@dataclass
class ArmWatchlistClient(ArmClient):
    """The watchlist calls of ARM's Microsoft.SecurityInsights provider, with errors that say
    which setting or role to fix."""

    target: WatchlistTarget
    credential: TokenCredential | None = None
    retry_total: int = RETRY_TOTAL
    retry_backoff_s: float = RETRY_BACKOFF_S
    upload_timeout_s: float = UPLOAD_TIMEOUT_S
    poll_interval_s: float = 2.0
    counter: ArmCounter = field(default_factory=ArmCounter)

    def __post_init__(self) -> None:
        super().__init__(
            self.target.arm_endpoint,
            API_VERSION,
            self.credential,
            retry_total=self.retry_total,
            retry_backoff_s=self.retry_backoff_s,
            counter=self.counter,
        )

    # --- identity -------------------------------------------------------------------------------

    def check_identity(self) -> None:
        """Fail before any write when no unexpired ARM token can be had."""
        assert self.credential is not None
        where = self.target.describe().replace("{", "{{").replace("}", "}}")
        usable_token(
            self.credential,
            self.scope,
            unavailable=(
                f"no Azure identity could get a token for ARM ({self.scope}) to publish the "
                f"{where}: {{error}}. Run `az login`, or give the "
                "Dagster host a managed identity or service principal (AZURE_CLIENT_ID, "
                "AZURE_TENANT_ID, …) with the Microsoft Sentinel Contributor role on the workspace."
            ),
            expired=(
                "the Azure identity handed out an expired ARM token (expired {expired}); nothing "
                f"was published to the {where}. Run `az login` again (or check "
                "the managed identity and this host's clock), then re-run the day."
            ),
        )

    # --- errors -------------------------------------------------------------------------------

    def identity_error(self, error: ClientAuthenticationError, what: str) -> Exception:
        return AzureAccessError(
            f"no Azure identity could get an ARM token to {what}: {first_line(error)}. Run "
            "`az login` (or fix the managed identity), then re-run the day."
        )

    def unreachable_error(self, error: Exception, what: str) -> Exception:
        return WatchlistPublishError(
            f"no answer from ARM ({self.target.arm_endpoint}) to {what}: "
            f"{first_line(error)}. Check SENTINEL_ARM_ENDPOINT and the network, then re-run."
        )

    def error_for(self, response: HttpResponse, what: str) -> Exception:
        """The error to raise for an unexpected answer: which setting, role or retry fixes it."""
        status = response.status_code
        code, detail = arm_detail(response)
        if status in (401, 403):
            return AzureAccessError(
                f"ARM refused to {what} ({detail}). The identity needs the Microsoft Sentinel "
                f"Contributor role on workspace '{self.target.workspace_name}' (resource group "
                f"'{self.target.resource_group}'); if the token was refused, run `az login` again."
            )
        if status == 404 and code in MISSING_CONTAINER_CODES:
            kind = MISSING_CONTAINER_CODES[code]
            setting = {
                "resource group": "SENTINEL_RESOURCE_GROUP (and SENTINEL_SUBSCRIPTION_ID)",
                "subscription": "SENTINEL_SUBSCRIPTION_ID",
                "workspace": "SENTINEL_WORKSPACE_NAME (the workspace's name, not its GUID)",
            }[kind]
            return WatchlistPublishError(
                f"ARM could not {what}: the {kind} does not exist ({detail}). Check {setting}; "
                "nothing was published there."
            )
        if status == 429:
            return WatchlistPublishError(
                f"ARM still throttled the request to {what} (HTTP 429) after {self.retry_total} "
                "retries that honoured its Retry-After: the principal's ARM write limit is used "
                "up. Re-run the day later; items already written stay and the re-run completes it."
            )
        return WatchlistPublishError(
            f"ARM failed to {what} ({detail}). Items already written stay; re-run the day once "
            "the cause is fixed."
        )

    # --- watchlist ------------------------------------------------------------------------------

    def get_watchlist(self) -> dict[str, Any] | None:
        """The watchlist resource, or None when the workspace has no watchlist of this alias."""
        what = f"read the {self.target.describe()}"
        response = self.send("GET", self.target.url, what)
        if response.status_code == 404:
            code, _ = arm_error(response)
            if code not in MISSING_CONTAINER_CODES:
                return None
        if response.status_code != 200:
            raise self.error_for(response, what)
        return response.json()

    def create_watchlist(self, properties: dict[str, Any], log: Log) -> int:
        """PUT the watchlist and follow its upload to the end; returns the polls it took."""
        what = f"create the {self.target.describe()}"
        response = self.send("PUT", self.target.url, what, json={"properties": properties})
        if response.status_code not in (200, 201):
            raise self.error_for(response, what)
        operation = response.headers.get("Azure-AsyncOperation")
        if not operation:
            return 0
        log.info(f"sentinel: {self.target.alias} is being uploaded; following {operation}")
        return self._follow(operation, response, what)

    def _follow(self, operation: str, response: HttpResponse, what: str) -> int:
        deadline = time.monotonic() + self.upload_timeout_s
        polls = 0
        while True:
            time.sleep(self._poll_delay(response))
            response = self.send("GET", operation, f"follow the upload of {what}")
            polls += 1
            if response.status_code != 200:
                raise self.error_for(response, f"follow the upload to {what}")
            answer = response.json()
            status = str(answer.get("status", ""))
            if status == "Succeeded":
                return polls
            if status in ("Failed", "Canceled"):
                error = answer.get("error") or {}
                raise WatchlistPublishError(
                    f"Sentinel could not {what}: the upload ended {status} "
                    f"({error.get('code', '')}: {error.get('message', '')}). Re-run the day: the "
                    "watchlist's items are checked and written again."
                )
            if time.monotonic() > deadline:
                raise WatchlistPublishError(
                    f"Sentinel's upload to {what} was still {status or 'unfinished'} after "
                    f"{self.upload_timeout_s:.0f} s; re-run the day later."
                )

    def _poll_delay(self, response: HttpResponse) -> float:
        try:
            return min(float(response.headers.get("Retry-After")), POLL_MAX_S)
        except (TypeError, ValueError):
            return self.poll_interval_s

    def wait_for_upload(self, watchlist: dict[str, Any], log: Log) -> dict[str, Any]:
        """A watchlist left uploading by an earlier run: wait until the upload has ended."""
        deadline = time.monotonic() + self.upload_timeout_s
        delay = self.poll_interval_s
        while watchlist["properties"].get("uploadStatus") == "InProgress":
            if time.monotonic() > deadline:
                raise WatchlistPublishError(
                    f"the {self.target.describe()} has been uploading for over "
                    f"{self.upload_timeout_s:.0f} s; re-run the day later."
                )
            log.info(f"sentinel: {self.target.alias} is still uploading; waiting {delay:g} s")
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)
            found = self.get_watchlist()
            if found is None:
                raise WatchlistPublishError(
                    f"the {self.target.describe()} disappeared while uploading; re-run the day."
                )
            watchlist = found
        return watchlist

    # --- items ----------------------------------------------------------------------------------

    def list_items(self) -> list[dict[str, Any]]:
        """Every item of the watchlist, following `nextLink`."""
        what = f"list the items of the {self.target.describe()}"
        return self.list_values(self.target.url + "/watchlistItems", what)

    def put_item(self, item: str, values: dict[str, str]) -> None:
        what = f"write item {item} ({values.get(SEARCH_KEY)}) of the {self.target.describe()}"
        url = f"{self.target.url}/watchlistItems/{item}"
        body = {"properties": {"itemsKeyValue": values}}
        response = self.send("PUT", url, what, json=body)
        if response.status_code not in (200, 201):
            raise self.error_for(response, what)

    def delete_item(self, item: str) -> None:
        what = f"delete item {item} of the {self.target.describe()}"
        response = self.send("DELETE", f"{self.target.url}/watchlistItems/{item}", what)
        if response.status_code not in (200, 204, 404):
            raise self.error_for(response, what)


# --- the publication --------------------------------------------------------------------------


def watchlist_properties(retention_days: int, raw_content: str | None) -> dict[str, Any]:
    """The PUT body's properties of a new watchlist (rawContent only when there are rows)."""
    properties: dict[str, Any] = {
        "displayName": "Beaconing candidates",
        "provider": PROVIDER,
        "source": SOURCE,
        "itemsSearchKey": SEARCH_KEY,
        "description": (
            "Network beaconing candidates from CommonSecurityLog, one item per pair "
            f"({SEARCH_KEY} = SourceIP|DestinationIP|DestinationPort|Protocol), refreshed daily; "
            f"items leave {retention_days} days after the pair was last reported."
        ),
        "contentType": "text/csv",
        "numberOfLinesToSkip": 0,
        "defaultDuration": f"P{retention_days}D",
        "labels": list(LABELS),
    }
    if raw_content is not None:
        properties["rawContent"] = raw_content
    return properties


def first_batch(items: list[dict[str, str]], budget: int = RAW_CONTENT_BUDGET) -> tuple[str, int]:
    """The longest prefix of `items` whose CSV (header included) stays within `budget` bytes of
    UTF-8: (that CSV, how many items it holds). The rest are written one PUT each."""
    header = csv_text([], ITEM_COLUMNS)
    size = len(header.encode("utf-8"))
    lines = []
    for item in items:
        line = _csv_line(item)
        size += len(line.encode("utf-8"))
        if size > budget:
            break
        lines.append(line)
    return header + "".join(lines), len(lines)


def _csv_line(item: dict[str, str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([item.get(c, "") for c in ITEM_COLUMNS])
    return out.getvalue()


def day_items(rows: list[dict[str, str]], day: dt.date) -> list[dict[str, str]]:
    """The day's watchlist rows as item values: one per PairKey (the first, best ranked, wins),
    stamped as first and last reported on `day`."""
    items: dict[str, dict[str, str]] = {}
    for row in rows:
        values = {c: row.get(c, "") for c in COLUMNS}
        values[FIRST_REPORTED] = values[LAST_REPORTED] = day.isoformat()
        items.setdefault(values[SEARCH_KEY], values)
    return list(items.values())


def publish_day(
    client: ArmWatchlistClient,
    rows: list[dict[str, str]],
    day: dt.date,
    retention_days: int,
    log: Log,
    raw_content_budget: int = RAW_CONTENT_BUDGET,
) -> PublishStats:
    """Make the watchlist reflect `day`'s reported pairs (`watchlist_csv.watchlist_rows`)."""
    counted_from = (client.counter.requests, client.counter.throttled, client.counter.retry_after_s)
    stats = PublishStats(day=day.isoformat())
    wanted = day_items(rows, day)
    stats.rows = len(wanted)
    written_now: set[str] = set()

    watchlist = client.get_watchlist()
    if watchlist is None:
        raw, count = first_batch(wanted, raw_content_budget) if wanted else (None, 0)
        stats.upload_polls = client.create_watchlist(watchlist_properties(retention_days, raw), log)
        stats.created_watchlist = True
        stats.uploaded_in_raw_content = count
        written_now = {item[SEARCH_KEY] for item in wanted[:count]}
        log.info(
            f"sentinel: created {client.target.describe()} with {count} of {len(wanted)} item(s) "
            "in its first upload"
        )
    else:
        search_key = watchlist["properties"].get("itemsSearchKey")
        if search_key != SEARCH_KEY:
            raise WatchlistPublishError(
                f"the {client.target.describe()} already exists with itemsSearchKey "
                f"'{search_key}', not '{SEARCH_KEY}': it is not this pipeline's. Choose another "
                "BEACON_WATCHLIST_ALIAS (or delete that watchlist)."
            )
        client.wait_for_upload(watchlist, log)

    existing = _index(client.list_items(), client, stats)
    newest = max([day, *(d for _, v in existing.values() if (d := _date(v)) is not None)])
    cutoff = newest - dt.timedelta(days=retention_days)

    for values in wanted:
        key = values[SEARCH_KEY]
        if key not in existing:
            if day < cutoff:
                continue  # an old day re-run: the pair would be past retention already
            client.put_item(item_id(key), values)
            stats.upserted += 1
            continue
        item, current = existing[key]
        merged = _merge(current, values, day)
        if merged is None:
            stats.kept_newer += 1
        elif all(current.get(c) == merged[c] for c in ITEM_COLUMNS):
            if key in written_now:
                stats.upserted += 1
            else:
                stats.unchanged += 1
        else:
            client.put_item(item, merged)
            existing[key] = (item, merged)
            stats.upserted += 1

    for item, values in existing.values():
        last = _date(values)
        if last is not None and last < cutoff:
            client.delete_item(item)
            stats.deleted += 1

    stats.requests = client.counter.requests - counted_from[0]
    stats.throttled = client.counter.throttled - counted_from[1]
    stats.retry_after_s = client.counter.retry_after_s - counted_from[2]
    log.info(
        f"sentinel: {day}: {stats.upserted} item(s) written, {stats.unchanged} unchanged, "
        f"{stats.kept_newer} kept (reported later), {stats.deleted} past retention deleted, "
        f"{stats.duplicates_removed} duplicate(s) removed; {stats.requests} request(s), "
        f"{stats.throttled} throttled"
    )
    return stats


def _index(
    items: list[dict[str, Any]], client: ArmWatchlistClient, stats: PublishStats
) -> dict[str, tuple[str, dict[str, str]]]:
    """Items by PairKey; a key held by several items keeps one (its uuid5 id when present) and
    the others are deleted, so a watchlist never shows a pair twice."""
    by_key: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for item in items:
        properties = item.get("properties") or {}
        values = properties.get("itemsKeyValue") or {}
        name = str(properties.get("watchlistItemId") or item.get("name") or "")
        key = values.get(SEARCH_KEY)
        if name and isinstance(key, str):
            by_key.setdefault(key, []).append((name, values))
    index = {}
    for key, found in by_key.items():
        found.sort(key=lambda pair: pair[0] != item_id(key))
        index[key] = found[0]
        for extra, _ in found[1:]:
            client.delete_item(extra)
            stats.duplicates_removed += 1
    return index


def _merge(current: dict[str, str], values: dict[str, str], day: dt.date) -> dict[str, str] | None:
    """The item's new values, or None when a later day's values must stay as they are."""
    first = _date(current, FIRST_REPORTED)
    last = _date(current)
    if last is not None and last > day:
        if first is not None and first <= day:
            return None
        return {**{c: current.get(c, "") for c in ITEM_COLUMNS}, FIRST_REPORTED: day.isoformat()}
    merged = dict(values)
    if first is not None and first < day:
        merged[FIRST_REPORTED] = first.isoformat()
    return merged


def _date(values: dict[str, str], column: str = LAST_REPORTED) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(values.get(column, "")))
    except ValueError:
        return None  # not written by this pipeline: never judged by retention
