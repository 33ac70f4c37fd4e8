"""A fake Log Analytics query API (`POST /v1/workspaces/{id}/query`) for azure-monitor-query.

It speaks the documented wire format (`../shared/data/formats/msticpy_az_mon_raw_query.json`):
`{"tables": [{"name": "PrimaryResult", "columns": [{name, type}], "rows": [[…]]}]}`, with the
service's error bodies. It holds tables of rows in memory and understands the small subset of
KQL the pipeline sends, strictly: anything else is a 400 like the service's.

    Table | where C >= datetime(X) and C < datetime(Y) and C in ("a", "b") and C == true
          | summarize count() [by bin(TimeGenerated, 5m)]
          | summarize arg_max(TimeGenerated, *) by Key
          | project A, B, C

Like the service it truncates a result above the row limit (500,000, lower in tests) and
answers HTTP 200 with the truncated rows plus a `PartialError`; knobs make it throttle (429 +
Retry-After), fail (500/503), or answer partially, and every request is logged with its arrival
time so tests can see retries and the delays between them.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from pipeline_tests.fakes.tls import TestCA, serve_https

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SCHEMA_CSV = SHARED_DATA / "formats" / "azure_sentinel_CommonSecurityLog_Schema.csv"
SERVICE_ROW_LIMIT = 500_000

THREAT_INTELLIGENCE_INDICATOR_COLUMNS = {
    "TimeGenerated": "datetime",
    "IndicatorId": "string",
    "ExternalIndicatorId": "string",
    "NetworkIP": "string",
    "NetworkDestinationIP": "string",
    "NetworkSourceIP": "string",
    "DomainName": "string",
    "Url": "string",
    "ConfidenceScore": "real",
    "Description": "string",
    "ExpirationDateTime": "datetime",
    "Active": "bool",
    "SourceSystem": "string",
    "ThreatType": "string",
    "Type": "string",
}
THREAT_INTEL_INDICATORS_COLUMNS = {
    "TimeGenerated": "datetime",
    "Id": "string",
    "ObservableKey": "string",
    "ObservableValue": "string",
    "Pattern": "string",
    "Confidence": "int",
    "Data": "dynamic",
    "SourceSystem": "string",
    "IsActive": "bool",
    "IsDeleted": "bool",
    "ValidUntil": "datetime",
    "Type": "string",
}


def common_security_log_columns() -> dict[str, str]:
    """CommonSecurityLog's 161 columns and their Kusto types, from the real `getschema`."""
    with SCHEMA_CSV.open(newline="") as handle:
        return {row["ColumnName"]: row["ColumnType"] for row in csv.DictReader(handle)}


class KqlError(Exception):
    """A query the fake (like the service) refuses: answered 400 with the service's shape."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Request:
    """One request as the fake saw it: when it arrived, what it asked and how it answered."""

    arrived: float  # time.monotonic()
    status: int
    kind: str  # "count", "rows", "other" or "rejected"
    query: str
    timespan: str | None
    rows: int = 0
    partial: bool = False


@dataclass
class FakeLogAnalytics:
    """The fake's memory and knobs; serve it with `running_log_analytics`."""

    workspace_id: str
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    row_limit: int = SERVICE_ROW_LIMIT
    expected_token: str | None = None  # None accepts any bearer token
    throttle_next: int = 0  # answer the next N queries 429 + Retry-After
    retry_after: str = "1"
    fail_next: int = 0  # answer the next N queries with `fail_status`
    fail_status: int = 503
    throttle_after: int = 0  # let this many queries through before throttling starts
    fail_after: int = 0  # let this many queries through before failing starts
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_table(self, name: str, columns: dict[str, str], rows: list[dict[str, Any]]) -> None:
        """Hold `rows` (dicts; datetimes as aware `datetime`) in table `name` of `columns`."""
        self.columns[name] = dict(columns)
        self.tables[name] = list(rows)

    def throttle(self, count: int, retry_after: str = "1", after: int = 0) -> None:
        """Answer `count` queries 429 with `Retry-After`, once `after` more have gone through."""
        with self.lock:
            self.throttle_next, self.retry_after, self.throttle_after = count, retry_after, after

    def fail(self, count: int, status: int = 503, after: int = 0) -> None:
        """Answer `count` queries with `status`, once `after` more have gone through."""
        with self.lock:
            self.fail_next, self.fail_status, self.fail_after = count, status, after

    def _misbehaviour(self) -> tuple[bool, bool]:
        """(throttle this request, fail this request); call under the lock."""
        throttled = failing = False
        if self.throttle_next > 0:
            if self.throttle_after > 0:
                self.throttle_after -= 1
            else:
                throttled = True
                self.throttle_next -= 1
        if not throttled and self.fail_next > 0:
            if self.fail_after > 0:
                self.fail_after -= 1
            else:
                failing = True
                self.fail_next -= 1
        return throttled, failing

    def answered(self, status: int) -> list[Request]:
        return [r for r in self.requests if r.status == status]


@contextmanager
def running_log_analytics(ca: TestCA, fake: FakeLogAnalytics) -> Iterator[str]:
    """Serve `fake` over HTTPS; yields its endpoint (`https://127.0.0.1:PORT`)."""
    with serve_https(ca, _Handler, fake) as url:
        yield url


# --- HTTP ----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeLogAnalytics/1.0"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(405, _error("MethodNotAllowed", "Only POST is supported by this fake"))

    def do_POST(self) -> None:
        fake: FakeLogAnalytics = self.server.state  # type: ignore[attr-defined]
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        query = str(body.get("query") or "")
        timespan = body.get("timespan")

        def log(status: int, kind: str, rows: int = 0, partial: bool = False) -> None:
            with fake.lock:
                fake.requests.append(Request(arrived, status, kind, query, timespan, rows, partial))

        match = re.fullmatch(r"/v1/workspaces/([^/?]+)/query", self.path.split("?", 1)[0])
        if not match:
            log(404, "rejected")
            self._send(
                404, _error("PathNotFoundError", f"The requested path does not exist: {self.path}")
            )
            return
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if fake.expected_token is not None and token != fake.expected_token:
            log(401, "rejected")
            self._send(
                401,
                _error(
                    "InvalidTokenError",
                    "The provided authentication is not valid for this resource",
                    inner=("InvalidAudience", "The audience of the token is not valid"),
                ),
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
            return
        if match.group(1) != fake.workspace_id:
            log(404, "rejected")
            self._send(
                404,
                _error(
                    "WorkspaceNotFoundError",
                    f"The workspace could not be found: {match.group(1)}",
                ),
            )
            return
        with fake.lock:
            throttled, failing = fake._misbehaviour()
            fail_status = fake.fail_status
        if throttled:
            log(429, "rejected")
            self._send(
                429,
                _error("ThrottledError", "Too many requests. Please retry later."),
                {"Retry-After": fake.retry_after},
            )
            return
        if failing:
            log(fail_status, "rejected")
            self._send(
                fail_status,
                _error(
                    "ServiceUnavailableError" if fail_status == 503 else "InternalServerError",
                    "The service is temporarily unavailable"
                    if fail_status == 503
                    else "An internal error occurred",
                ),
            )
            return
        try:
            result = run_kql(fake, query, timespan)
        except KqlError as error:
            log(400, "rejected")
            self._send(
                400,
                _error(
                    "BadArgumentError",
                    "The request had some invalid properties",
                    inner=(error.code, error.message),
                ),
            )
            return
        columns, rows, kind = result
        partial = len(rows) > fake.row_limit
        rows = rows[: fake.row_limit]
        answer: dict[str, Any] = {
            "tables": [
                {
                    "name": "PrimaryResult",
                    "columns": [{"name": n, "type": t} for n, t in columns],
                    "rows": [[_wire(row.get(n), t) for n, t in columns] for row in rows],
                }
            ]
        }
        if partial:
            # What the service does when a result exceeds its record count limit.
            answer["error"] = {
                "code": "PartialError",
                "message": "There were some errors when processing your query.",
                "details": [
                    {
                        "code": "EngineError",
                        "message": "Something went wrong processing your query on the server.",
                        "innererror": {
                            "code": "-2133196797",
                            "message": (
                                "Query result set has exceeded the internal record count limit "
                                f"{fake.row_limit} (E_QUERY_RESULT_SET_TOO_LARGE; see "
                                "https://aka.ms/kustoquerylimits)"
                            ),
                            "severity": 2,
                            "severityName": "Error",
                        },
                    }
                ],
            }
        log(200, kind, len(rows), partial)
        self._send(200, answer)


def _error(code: str, message: str, inner: tuple[str, str] | None = None) -> dict:
    error: dict[str, Any] = {
        "message": message,
        "code": code,
        "correlationId": "00000000-0000-0000-0000-00000000fa4e",
    }
    if inner:
        error["innererror"] = {"code": inner[0], "message": inner[1]}
    return {"error": error}


def _wire(value: Any, kusto_type: str) -> Any:
    """A value as the service writes it: datetimes with 7 fractional digits, dynamic as JSON."""
    if value is None:
        return None
    if kusto_type == "datetime" and isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    if kusto_type == "dynamic" and not isinstance(value, str):
        return json.dumps(value)
    return value


# --- the KQL subset ------------------------------------------------------------------------------

_DATETIME = re.compile(r"datetime\(\s*([0-9T:\-.]+)Z?\s*\)")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside quotes and parentheses."""
    parts, depth, quote, current = [], 0, "", []
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            current.append(char)
            if char == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
            current.append(char)
        elif char == "(":
            depth += 1
            current.append(char)
        elif char == ")":
            depth -= 1
            current.append(char)
        elif depth == 0 and text.startswith(separator, i):
            parts.append("".join(current).strip())
            current = []
            i += len(separator)
            continue
        else:
            current.append(char)
        i += 1
    parts.append("".join(current).strip())
    return parts


def _parse_datetime(text: str) -> dt.datetime:
    text = text.strip().removesuffix("Z")
    if "." in text:
        whole, fraction = text.split(".", 1)
        text = f"{whole}.{fraction[:6].ljust(6, '0')}"
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    except ValueError as error:
        raise KqlError("SyntaxError", f"bad datetime literal {text!r}") from error


def _parse_literal(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return json.loads(text)  # KQL's backslash escapes in "…" are JSON's
    match = _DATETIME.fullmatch(text)
    if match:
        return _parse_datetime(match.group(1))
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text) if "." in text else int(text)
    raise KqlError("SyntaxError", f"unsupported literal {text!r}")


def _condition(text: str, columns: dict[str, str]):
    match = re.fullmatch(r"(\w+)\s+in\s*\((.*)\)", text, re.DOTALL)
    if match:
        column = _known(match.group(1), columns)
        values = {_parse_literal(v) for v in _split_top_level(match.group(2), ",")}
        return lambda row: row.get(column) in values
    match = re.fullmatch(r"(\w+)\s*(>=|<=|==|!=|<|>)\s*(.+)", text, re.DOTALL)
    if not match:
        raise KqlError("SyntaxError", f"unsupported where condition {text!r}")
    column, operator, literal = _known(match.group(1), columns), match.group(2), match.group(3)
    value = _parse_literal(literal)
    compare = {
        ">=": lambda a: a >= value,
        "<=": lambda a: a <= value,
        ">": lambda a: a > value,
        "<": lambda a: a < value,
        "==": lambda a: a == value,
        "!=": lambda a: a != value,
    }[operator]
    return lambda row: row.get(column) is not None and compare(row[column])


def _known(column: str, columns: dict[str, str]) -> str:
    if column not in columns:
        raise KqlError(
            "SEM0100",
            f"'where' operator: Failed to resolve column or scalar expression named '{column}'",
        )
    return column


def _timespan_filter(timespan: str | None):
    if not timespan:
        return lambda row: True
    start_text, _, end_text = timespan.partition("/")
    start = _parse_datetime(start_text)
    if end_text.startswith("P"):
        raise KqlError("SyntaxError", "this fake only understands start/end timespans")
    end = _parse_datetime(end_text)
    return lambda row: row.get("TimeGenerated") is not None and start <= row["TimeGenerated"] < end


def run_kql(
    fake: FakeLogAnalytics, query: str, timespan: str | None
) -> tuple[list[tuple[str, str]], list[dict[str, Any]], str]:
    """Evaluate the query; returns (columns with types, rows as dicts, kind of query)."""
    stages = _split_top_level(query.strip(), "|")
    table = stages[0]
    if table not in fake.tables:
        raise KqlError(
            "SEM0100",
            f"'where' operator: Failed to resolve table or column expression named '{table}'",
        )
    types = dict(fake.columns[table])
    columns = list(types.items())
    rows = [row for row in fake.tables[table] if _timespan_filter(timespan)(row)]
    kind = "other"
    for stage in stages[1:]:
        operator, _, rest = stage.partition(" ")
        rest = rest.strip()
        if operator == "where":
            conditions = [_condition(c, types) for c in _split_top_level(rest, " and ")]
            rows = [row for row in rows if all(test(row) for test in conditions)]
        elif operator == "project":
            names = [n.strip() for n in rest.split(",")]
            for name in names:
                if name not in types:
                    raise KqlError(
                        "SEM0100",
                        f"'project' operator: Failed to resolve scalar expression named '{name}'",
                    )
            columns = [(n, types[n]) for n in names]
            types = dict(columns)
            kind = "rows" if kind == "other" else kind
        elif operator == "summarize":
            columns, rows, kind = _summarize(rest, types, rows)
            types = dict(columns)
        else:
            raise KqlError("SyntaxError", f"this fake does not support the '{operator}' operator")
    return columns, rows, kind


def _summarize(
    text: str, types: dict[str, str], rows: list[dict[str, Any]]
) -> tuple[list[tuple[str, str]], list[dict[str, Any]], str]:
    if text == "count()":
        return [("count_", "long")], [{"count_": len(rows)}], "count"
    match = re.fullmatch(r"count\(\)\s+by\s+bin\(\s*TimeGenerated\s*,\s*(\w+)\s*\)", text)
    if match:
        duration = _DURATION.fullmatch(match.group(1))
        if not duration:
            raise KqlError("SyntaxError", f"unsupported bin size {match.group(1)!r}")
        size = int(duration.group(1)) * _UNITS[duration.group(2)]
        counts: dict[dt.datetime, int] = {}
        for row in rows:
            stamp = row["TimeGenerated"]
            start = stamp - dt.timedelta(seconds=stamp.timestamp() % size)
            counts[start] = counts.get(start, 0) + 1
        # Kusto returns empty bins not at all and the rest in no promised order: newest first here.
        out = [{"TimeGenerated": k, "count_": v} for k, v in sorted(counts.items(), reverse=True)]
        return [("TimeGenerated", "datetime"), ("count_", "long")], out, "count"
    match = re.fullmatch(r"arg_max\(\s*TimeGenerated\s*,\s*\*\s*\)\s+by\s+(\w+)", text)
    if match:
        key = match.group(1)
        if key not in types:
            raise KqlError("SEM0100", f"Failed to resolve scalar expression named '{key}'")
        latest: dict[Any, dict[str, Any]] = {}
        for row in rows:
            current = latest.get(row.get(key))
            if current is None or row["TimeGenerated"] > current["TimeGenerated"]:
                latest[row.get(key)] = row
        columns = [(key, types[key]), ("TimeGenerated", "datetime")] + [
            (n, t) for n, t in types.items() if n not in (key, "TimeGenerated")
        ]
        return columns, list(latest.values()), "other"
    raise KqlError("SyntaxError", f"this fake does not support 'summarize {text}'")
