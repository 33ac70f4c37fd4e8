"""A fake Azure Resource Manager for Microsoft Sentinel watchlists (Microsoft.SecurityInsights).

It speaks the ARM wire protocol the pipeline uses (REFERENCE §4), over HTTPS on 127.0.0.1:

    {ws}/providers/Microsoft.SecurityInsights/watchlists/{alias}                 GET PUT DELETE
    {ws}/providers/Microsoft.SecurityInsights/watchlists/{alias}/watchlistItems  GET (paged)
    {ws}/providers/Microsoft.SecurityInsights/watchlists/{alias}/watchlistItems/{id}  GET PUT DELETE
    {ws}/providers/Microsoft.SecurityInsights/incidents/{id}                      GET PUT
    /subscriptions/{sub}/providers/Microsoft.SecurityInsights/operationStatuses/{op}  GET

where {ws} is `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/
workspaces/{name}`. Like ARM it checks, in this order: the bearer token (401), the api-version
(400), throttling (429 + Retry-After), the resource group and workspace (404
ResourceGroupNotFound / ResourceNotFound), then the body: a watchlist needs displayName, provider
and itemsSearchKey, contentType `text/csv` with rawContent, rawContent under 3.8 MB whose CSV
header holds the search key, an alias of 3–64 characters; an item needs `itemsKeyValue`, an
object of strings holding the search key, and a GUID id; an incident a title, a severity and a
status from the API's enums, and a GUID id. Errors have ARM's shape
`{"error": {"code", "message"}}`.

Creating a watchlist answers 201 with `Azure-AsyncOperation` (knob `async_create`): the
operation stays InProgress for `async_polls` polls, then Succeeded, and only then are the
rawContent rows stored as items (with service-chosen ids, as Sentinel does) and the watchlist's
uploadStatus becomes Complete. State (watchlists, items) lives in memory across calls.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from pipeline_tests.fakes.az_cli import token_for
from pipeline_tests.fakes.tls import TestCA, serve_https

API_VERSIONS = ("2025-09-01",)
ARM_RESOURCE = "https://management.azure.com"
RAW_CONTENT_LIMIT = 3_800_000  # bytes of UTF-8; the service refuses 3.8 MB and more
WATCHLIST_PROPERTIES = {
    "displayName",
    "provider",
    "itemsSearchKey",
    "source",
    "sourceType",
    "description",
    "contentType",
    "numberOfLinesToSkip",
    "rawContent",
    "defaultDuration",
    "labels",
    "watchlistAlias",
}
TENANT_ID = "00000000-0000-0000-0000-000000000001"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_IN_WORKSPACE = (
    r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
    r"/providers/microsoft\.operationalinsights/workspaces/(?P<ws>[^/]+)"
    r"/providers/microsoft\.securityinsights"
)
_WORKSPACE = _IN_WORKSPACE + r"/watchlists/(?P<alias>[^/]+)"
INCIDENT_PATH = re.compile(_IN_WORKSPACE + r"/incidents/(?P<incident>[^/]+)$", re.IGNORECASE)
SEVERITIES = {"High", "Medium", "Low", "Informational"}
INCIDENT_STATUSES = {"New", "Active", "Closed"}
WATCHLIST_PATH = re.compile(_WORKSPACE + r"$", re.IGNORECASE)
ITEMS_PATH = re.compile(_WORKSPACE + r"/watchlistitems$", re.IGNORECASE)
ITEM_PATH = re.compile(_WORKSPACE + r"/watchlistitems/(?P<item>[^/]+)$", re.IGNORECASE)
OPERATION_PATH = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.securityinsights"
    r"/operationstatuses/(?P<op>[^/]+)$",
    re.IGNORECASE,
)


class ArmError(Exception):
    """An answer in ARM's error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Watchlist:
    alias: str
    properties: dict[str, Any]
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> item resource
    path: str = ""
    upload_status: str = "Complete"
    created: str = ""


@dataclass
class Operation:
    key: tuple[str, str, str, str]
    polls_left: int
    pending_rows: list[dict[str, str]]
    status: str = "InProgress"


@dataclass
class Request:
    """One request as the fake saw it."""

    method: str
    path: str
    status: int


@dataclass
class FakeSentinelArm:
    """The fake's memory and knobs; serve it with `running_sentinel_arm`."""

    # (subscription, resource group, workspace) triples that exist; compared case-insensitively.
    workspaces: set[tuple[str, str, str]] = field(default_factory=set)
    api_versions: tuple[str, ...] = API_VERSIONS
    expected_token: str = token_for(ARM_RESOURCE)
    async_create: bool = True  # a new watchlist answers 201 + Azure-AsyncOperation
    async_polls: int = 2  # the operation answers InProgress this many times
    async_fail: bool = False  # ... then Failed instead of Succeeded
    async_retry_after: str = "0"
    page_size: int = 50  # watchlistItems per page (nextLink beyond)
    throttle_next: int = 0  # answer the next N requests 429 + Retry-After
    throttle_after: int = 0  # ... once this many more requests have gone through
    retry_after: str = "1"
    watchlists: dict[tuple[str, str, str, str], Watchlist] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    # (subscription, resource group, workspace, incident id) -> the incident resource
    incidents: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def add_workspace(self, subscription: str, resource_group: str, workspace: str) -> None:
        self.workspaces.add((subscription.lower(), resource_group.lower(), workspace.lower()))

    def add_watchlist(
        self, subscription: str, resource_group: str, workspace: str, alias: str, **properties: Any
    ) -> Watchlist:
        """A watchlist someone else created (uploaded, no items)."""
        key = (subscription.lower(), resource_group.lower(), workspace.lower(), alias.lower())
        path = (
            f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
            f"Microsoft.OperationalInsights/workspaces/{workspace}/providers/"
            f"Microsoft.SecurityInsights/watchlists/{alias}"
        )
        with self.lock:
            self.watchlists[key] = Watchlist(alias, dict(properties), path=path, created=_now())
            return self.watchlists[key]

    def throttle(self, count: int, retry_after: str = "1", after: int = 0) -> None:
        """Answer `count` requests 429 with `Retry-After`, once `after` more have gone through."""
        with self.lock:
            self.throttle_next, self.retry_after, self.throttle_after = count, retry_after, after

    def watchlist(self, alias: str) -> Watchlist | None:
        """The one watchlist called `alias` (in any workspace), or None."""
        with self.lock:
            found = [w for k, w in self.watchlists.items() if k[3] == alias.lower()]
        assert len(found) <= 1, f"several watchlists are called {alias}"
        return found[0] if found else None

    def items(self, alias: str) -> list[dict[str, str]]:
        """The stored `itemsKeyValue` of each item of watchlist `alias`, as the service keeps it."""
        watchlist = self.watchlist(alias)
        if watchlist is None:
            return []
        with self.lock:
            return [dict(i["properties"]["itemsKeyValue"]) for i in watchlist.items.values()]

    def item_ids(self, alias: str) -> list[str]:
        watchlist = self.watchlist(alias)
        with self.lock:
            return list(watchlist.items) if watchlist else []

    def answered(self, status: int, method: str | None = None) -> list[Request]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.status == status and (method is None or r.method == method)
            ]

    def writes(self) -> list[Request]:
        """Requests that changed or tried to change state (PUT, DELETE), any answer."""
        with self.lock:
            return [r for r in self.requests if r.method in ("PUT", "DELETE")]

    # --- the service ----------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes, base: str
    ) -> tuple[int, dict | None, dict[str, str]]:
        with self.lock:
            try:
                return self._handle(method, path, query, headers, body, base)
            except ArmError as error:
                extra = {"Retry-After": self.retry_after} if error.status == 429 else {}
                return error.status, _error(error.code, error.message), extra

    def _handle(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes, base: str
    ) -> tuple[int, dict | None, dict[str, str]]:
        authorization = headers.get("Authorization")
        if not authorization:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        if authorization != f"Bearer {self.expected_token}":
            raise ArmError(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid (expected a token for https://management.azure.com/).",
            )
        version = query.get("api-version")
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version not in self.api_versions:
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are "
                f"'{', '.join(self.api_versions)}'.",
            )
        if self.throttle_next > 0 and self.throttle_after > 0:
            self.throttle_after -= 1
        elif self.throttle_next > 0:
            self.throttle_next -= 1
            raise ArmError(
                429,
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for operation "
                "type - Write. Retry after the number of seconds in the Retry-After header.",
            )
        if match := OPERATION_PATH.fullmatch(path):
            return self._operation(method, match["op"])
        for pattern, handler in (
            (WATCHLIST_PATH, self._watchlist),
            (ITEMS_PATH, self._item_list),
            (ITEM_PATH, self._item),
            (INCIDENT_PATH, self._incident),
        ):
            if match := pattern.fullmatch(path):
                key = self._workspace_key(match)
                return handler(method, key, match, query, body, base, path)
        raise ArmError(404, "InvalidResourceType", f"The resource path '{path}' is not known.")

    def _workspace_key(self, match: re.Match) -> tuple[str, str, str, str]:
        sub, rg, ws = match["sub"].lower(), match["rg"].lower(), match["ws"].lower()
        if not any(k[:2] == (sub, rg) for k in self.workspaces):
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{match['rg']}' could not be found."
            )
        if (sub, rg, ws) not in self.workspaces:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.OperationalInsights/workspaces/{match['ws']}' under "
                f"resource group '{match['rg']}' was not found.",
            )
        name = match.groupdict().get("alias") or match["incident"]
        return sub, rg, ws, urllib.parse.unquote(name).lower()

    def _existing(self, key: tuple[str, str, str, str]) -> Watchlist:
        watchlist = self.watchlists.get(key)
        if watchlist is None:
            raise ArmError(404, "NotFound", f"Watchlist with alias '{key[3]}' was not found.")
        return watchlist

    # --- watchlists -----------------------------------------------------------------------------

    def _watchlist(self, method, key, match, query, body, base, path):
        if method == "GET":
            return 200, self._watchlist_resource(self._existing(key), path), {}
        if method == "DELETE":
            watchlist = self.watchlists.get(key)
            if watchlist is None:
                return 204, None, {}
            if watchlist.upload_status == "InProgress":
                raise ArmError(409, "Conflict", "A watchlist being uploaded cannot be deleted.")
            del self.watchlists[key]
            return 200, None, {}
        if method != "PUT":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not supported here.")
        alias = urllib.parse.unquote(match["alias"])
        if not 3 <= len(alias) <= 64:
            raise ArmError(400, "BadRequest", "The watchlist alias must be 3-64 characters long.")
        properties = _properties(body)
        unknown = set(properties) - WATCHLIST_PROPERTIES
        if unknown:
            raise ArmError(400, "BadRequest", f"Unknown watchlist properties: {sorted(unknown)}")
        for name in ("displayName", "provider", "itemsSearchKey"):
            if not isinstance(properties.get(name), str) or not properties[name].strip():
                raise ArmError(400, "BadRequest", f"The watchlist property '{name}' is required.")
        skip = properties.get("numberOfLinesToSkip", 0)
        if not isinstance(skip, int) or skip < 0:
            raise ArmError(400, "BadRequest", "numberOfLinesToSkip must be a whole number >= 0.")
        labels = properties.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
            raise ArmError(400, "BadRequest", "labels must be a list of strings.")
        duration = properties.get("defaultDuration")
        iso_duration = r"P(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?"
        if duration is not None and not re.fullmatch(iso_duration, str(duration)):
            raise ArmError(400, "BadRequest", "defaultDuration must be an ISO 8601 duration.")
        rows: list[dict[str, str]] = []
        raw = properties.get("rawContent")
        if raw is not None:
            if properties.get("contentType") != "text/csv":
                raise ArmError(400, "BadRequest", "contentType must be 'text/csv' with rawContent.")
            if not isinstance(raw, str) or len(raw.encode("utf-8")) >= RAW_CONTENT_LIMIT:
                raise ArmError(
                    400, "BadRequest", "rawContent must be a string smaller than 3.8 MB."
                )
            rows = _csv_rows(raw, skip, properties["itemsSearchKey"])
        now = _now()
        existing = self.watchlists.get(key)
        stored = {k: v for k, v in properties.items() if k != "rawContent"}
        if existing is not None:
            if existing.upload_status == "InProgress":
                raise ArmError(409, "Conflict", "The watchlist is still being uploaded.")
            existing.properties = stored
            _add_rows(existing, rows)
            return 200, self._watchlist_resource(existing, path), {}
        watchlist = Watchlist(alias=alias, properties=stored, path=path, created=now)
        self.watchlists[key] = watchlist
        if not self.async_create:
            _add_rows(watchlist, rows)
            return 201, self._watchlist_resource(watchlist, path), {}
        watchlist.upload_status = "InProgress"
        op_id = str(uuid.uuid4())
        self.operations[op_id] = Operation(key=key, polls_left=self.async_polls, pending_rows=rows)
        location = (
            f"{base}/subscriptions/{match['sub']}/providers/Microsoft.SecurityInsights"
            f"/operationStatuses/{op_id}?api-version={query['api-version']}"
        )
        headers = {"Azure-AsyncOperation": location, "Retry-After": self.async_retry_after}
        return 201, self._watchlist_resource(watchlist, path), headers

    def _operation(self, method, op_id):
        operation = self.operations.get(op_id)
        if method != "GET" or operation is None:
            raise ArmError(404, "NotFound", f"Operation {op_id} was not found.")
        if operation.status == "InProgress":
            if operation.polls_left > 0:
                operation.polls_left -= 1
            else:
                watchlist = self.watchlists.get(operation.key)
                if self.async_fail or watchlist is None:
                    operation.status = "Failed"
                    if watchlist is not None:
                        watchlist.upload_status = "Failed"
                else:
                    operation.status = "Succeeded"
                    _add_rows(watchlist, operation.pending_rows)
                    watchlist.upload_status = "Complete"
        body: dict[str, Any] = {"id": op_id, "name": op_id, "status": operation.status}
        if operation.status == "Failed":
            body["error"] = {"code": "WatchlistUploadFailed", "message": "The upload failed."}
        return 200, body, {"Retry-After": self.async_retry_after}

    def _watchlist_resource(self, watchlist: Watchlist, path: str) -> dict:
        return {
            "id": path,
            "name": watchlist.alias,
            "type": "Microsoft.SecurityInsights/Watchlists",
            "etag": f'"{uuid.uuid4()}"',
            "properties": {
                **watchlist.properties,
                "watchlistAlias": watchlist.alias,
                "watchlistId": str(uuid.uuid5(uuid.NAMESPACE_URL, path.lower())),
                "uploadStatus": watchlist.upload_status,
                "created": watchlist.created,
                "updated": _now(),
                "tenantId": TENANT_ID,
                "provisioningState": "Succeeded",
            },
        }

    # --- items ----------------------------------------------------------------------------------

    def _item_list(self, method, key, match, query, body, base, path):
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not supported here.")
        watchlist = self._existing(key)
        skip = int(query.get("$skipToken") or 0)
        items = list(watchlist.items.values())
        page = items[skip : skip + self.page_size]
        answer: dict[str, Any] = {"value": page}
        if skip + self.page_size < len(items):
            following = urllib.parse.urlencode(
                {"api-version": query["api-version"], "$skipToken": skip + self.page_size}
            )
            answer["nextLink"] = f"{base}{path}?{following}"
        return 200, answer, {}

    def _item(self, method, key, match, query, body, base, path):
        watchlist = self._existing(key)
        item_id = match["item"].lower()
        if not GUID.fullmatch(item_id):
            raise ArmError(400, "BadRequest", f"The watchlist item id '{item_id}' is not a GUID.")
        if method == "GET":
            if item_id not in watchlist.items:
                raise ArmError(404, "NotFound", f"Watchlist item '{item_id}' was not found.")
            return 200, watchlist.items[item_id], {}
        if method == "DELETE":
            return (200 if watchlist.items.pop(item_id, None) else 204), None, {}
        if method != "PUT":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not supported here.")
        if watchlist.upload_status == "InProgress":
            raise ArmError(409, "Conflict", "The watchlist is still being uploaded.")
        values = _properties(body).get("itemsKeyValue")
        if not isinstance(values, dict) or not values:
            raise ArmError(400, "BadRequest", "itemsKeyValue must be a non-empty object.")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            raise ArmError(400, "BadRequest", "itemsKeyValue must map column names to strings.")
        search_key = watchlist.properties["itemsSearchKey"]
        if search_key not in values:
            raise ArmError(
                400, "BadRequest", f"itemsKeyValue lacks the itemsSearchKey column '{search_key}'."
            )
        created = item_id not in watchlist.items
        watchlist.items[item_id] = _item_resource(path, item_id, values)
        return (201 if created else 200), watchlist.items[item_id], {}

    # --- incidents ------------------------------------------------------------------------------

    def _incident(self, method, key, match, query, body, base, path):
        if not GUID.fullmatch(key[3]):
            raise ArmError(400, "BadRequest", f"The incident id '{key[3]}' is not a GUID.")
        if method == "GET":
            if key not in self.incidents:
                raise ArmError(404, "NotFound", f"Incident '{key[3]}' was not found.")
            return 200, self.incidents[key], {}
        if method != "PUT":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not supported here.")
        properties = _properties(body)
        if not isinstance(properties.get("title"), str) or not properties["title"].strip():
            raise ArmError(400, "BadRequest", "The incident property 'title' is required.")
        if properties.get("severity") not in SEVERITIES:
            raise ArmError(400, "BadRequest", f"severity must be one of {sorted(SEVERITIES)}.")
        if properties.get("status") not in INCIDENT_STATUSES:
            raise ArmError(400, "BadRequest", f"status must be one of {sorted(INCIDENT_STATUSES)}.")
        labels = properties.get("labels", [])
        if not isinstance(labels, list) or not all(
            isinstance(v, dict) and isinstance(v.get("labelName"), str) for v in labels
        ):
            raise ArmError(400, "BadRequest", "labels must be a list of {labelName, labelType}.")
        created = key not in self.incidents
        number = (
            len(self.incidents) + 1
            if created
            else self.incidents[key]["properties"]["incidentNumber"]
        )
        self.incidents[key] = {
            "id": path,
            "name": key[3],
            "type": "Microsoft.SecurityInsights/Incidents",
            "etag": f'"{uuid.uuid4()}"',
            "properties": {**properties, "incidentNumber": number, "lastModifiedTimeUtc": _now()},
        }
        return (201 if created else 200), self.incidents[key], {}


def _item_resource(path: str, item_id: str, values: dict[str, str]) -> dict:
    now = _now()
    return {
        "id": path,
        "name": item_id,
        "type": "Microsoft.SecurityInsights/Watchlists/WatchlistItems",
        "etag": f'"{uuid.uuid4()}"',
        "properties": {
            "watchlistItemType": "Custom",
            "watchlistItemId": item_id,
            "tenantId": TENANT_ID,
            "isDeleted": False,
            "created": now,
            "updated": now,
            "itemsKeyValue": dict(values),
            "entityMapping": {},
        },
    }


def _add_rows(watchlist: Watchlist, rows: list[dict[str, str]]) -> None:
    """rawContent rows become items with ids the service chooses (not the client's)."""
    for row in rows:
        item_id = str(uuid.uuid4())
        path = f"{watchlist.path}/watchlistItems/{item_id}"
        watchlist.items[item_id] = _item_resource(path, item_id, row)


def _csv_rows(raw: str, skip: int, search_key: str) -> list[dict[str, str]]:
    lines = list(csv.reader(io.StringIO(raw, newline="")))[skip:]
    if not lines:
        raise ArmError(400, "BadRequest", "rawContent has no header line.")
    header, *rows = lines
    if search_key not in header:
        raise ArmError(
            400, "BadRequest", f"The itemsSearchKey '{search_key}' is not a column of rawContent."
        )
    for number, row in enumerate(rows, start=2 + skip):
        if len(row) != len(header):
            raise ArmError(
                400,
                "BadRequest",
                f"rawContent line {number} has {len(row)} cells, not {len(header)}.",
            )
    return [dict(zip(header, row, strict=True)) for row in rows]


def _properties(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArmError(400, "InvalidRequestContent", f"The body is not JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("properties"), dict):
        raise ArmError(400, "InvalidRequestContent", 'The body must be {"properties": {...}}.')
    return document["properties"]


def _error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def running_sentinel_arm(ca: TestCA, fake: FakeSentinelArm) -> Iterator[str]:
    """Serve `fake` over HTTPS; yields its endpoint (`https://127.0.0.1:PORT`)."""
    with serve_https(ca, _Handler, fake) as url:
        yield url


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeArm/1.0"

    def log_message(self, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        fake: FakeSentinelArm = self.server.state  # type: ignore[attr-defined]
        split = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        base = f"https://{self.headers.get('Host')}"
        status, answer, headers = fake.handle(
            self.command, split.path, query, self.headers, body, base
        )
        with fake.lock:
            fake.requests.append(Request(self.command, split.path, status))
        data = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(status)
        if answer is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _serve
