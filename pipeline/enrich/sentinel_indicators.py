"""Microsoft Sentinel's own threat intelligence: the IPs, networks and domains in the workspace's
indicator tables, so beacon destinations can be matched against what the SOC already knows.

Two tables hold them: the legacy `ThreatIntelligenceIndicator` (one row per indicator update,
observables in NetworkIP / NetworkDestinationIP / NetworkSourceIP / DomainName / Url) and the
newer STIX-shaped `ThreatIntelIndicators` (ObservableKey such as `ipv4-addr:value`, the STIX
object in `Data`). Both are read at their latest version per indicator (`arg_max(TimeGenerated,
*)`), active only, over the last 14 days (indicator feeds re-send live indicators well within
that, as Sentinel's own TI analytics rules assume). A workspace without one of the tables is
normal: that source is empty and the report says so.

URL indicators count only when their host is an IP address: a URL's domain is often a shared
legitimate site (file sharing, code hosting), and flagging the whole domain would be wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from typing import Any

import pandas as pd

from pipeline.azure.log_analytics import (
    LogAnalytics,
    ResultTruncatedError,
    TableNotFoundError,
)
from pipeline.enrich.threat_intel import classify
from pipeline.settings import Settings

LEGACY_TABLE = "ThreatIntelligenceIndicator"
STIX_TABLE = "ThreatIntelIndicators"
LOOKBACK = dt.timedelta(days=14)
COLUMNS = ("indicator", "indicator_type", "source", "confidence", "description", "valid_until")

LEGACY_QUERY = (
    f"{LEGACY_TABLE} | summarize arg_max(TimeGenerated, *) by IndicatorId"
    " | where Active == true"
    " | project IndicatorId, NetworkIP, NetworkDestinationIP, NetworkSourceIP, DomainName, Url,"
    " ConfidenceScore, Description, ExpirationDateTime, SourceSystem, ThreatType"
)
STIX_QUERY = (
    f"{STIX_TABLE} | summarize arg_max(TimeGenerated, *) by Id"
    " | where IsActive == true"
    " | project Id, ObservableKey, ObservableValue, Confidence, Data, SourceSystem, ValidUntil"
)
_STIX_IP_KEYS = ("ipv4-addr:value", "ipv6-addr:value")


def fetch_indicators(
    settings: Settings, client: LogAnalytics | None = None, now: dt.datetime | None = None
) -> pd.DataFrame | None:
    """The workspace's active IP, CIDR and domain indicators; None when no workspace is set.

    Columns: indicator (lower-case IP, CIDR or domain), indicator_type ('ip'|'cidr'|'domain'),
    source, confidence (Int64 0–100, nullable), description, valid_until (UTC, NaT = none).
    `frame.attrs["sentinel_sources"]` holds the per-table report (see `fetch_with_report`).
    """
    frame, report = fetch_with_report(settings, client, now)
    if frame is not None:
        frame.attrs["sentinel_sources"] = report
    return frame


def fetch_with_report(
    settings: Settings, client: LogAnalytics | None = None, now: dt.datetime | None = None
) -> tuple[pd.DataFrame | None, dict[str, dict[str, Any]]]:
    """`fetch_indicators`, plus per table: status ('ok' | 'table not found'), rows read,
    indicators kept, observables skipped (other kinds, URL hosts that are names) and expired."""
    if not settings.log_analytics_workspace_id:
        return None, {}
    now = now or dt.datetime.now(dt.UTC)
    la = client or LogAnalytics(
        settings.log_analytics_workspace_id, settings.log_analytics_endpoint
    )
    records: list[dict[str, Any]] = []
    report: dict[str, dict[str, Any]] = {}
    try:
        for table, query, convert in (
            (LEGACY_TABLE, LEGACY_QUERY, _legacy_indicators),
            (STIX_TABLE, STIX_QUERY, _stix_indicators),
        ):
            try:
                result = la.query(query, now - LOOKBACK, now)
            except TableNotFoundError:
                report[table] = {"status": "table not found", "rows": 0, "indicators": 0}
                continue
            except ResultTruncatedError as error:
                raise ResultTruncatedError(
                    f"{table}: more active indicators than one query may return ({error})"
                ) from error
            rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
            found, skipped = convert(rows)
            kept = [r for r in found if pd.isna(r["valid_until"]) or r["valid_until"] > now]
            records += kept
            report[table] = {
                "status": "ok",
                "rows": len(rows),
                "indicators": len(kept),
                "skipped_observables": skipped,
                "expired": len(found) - len(kept),
            }
    finally:
        if client is None:
            la.close()
    return _frame(records), report


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    frame["indicator"] = frame["indicator"].astype(str)
    frame["indicator_type"] = frame["indicator_type"].astype(str)
    frame["source"] = frame["source"].astype(str)
    frame["description"] = frame["description"].fillna("").astype(str)
    frame["confidence"] = pd.array(frame["confidence"].tolist(), dtype="Int64")
    frame["valid_until"] = pd.to_datetime(frame["valid_until"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    # One row per indicator and source: the most confident, then the longest-lived version.
    frame = frame.sort_values(
        ["indicator", "source", "confidence", "valid_until"],
        ascending=[True, True, False, False],
        na_position="last",
    )
    return frame.drop_duplicates(["indicator", "indicator_type", "source"]).reset_index(drop=True)


def _legacy_indicators(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    found, skipped = [], 0
    for row in rows:
        observables = [
            classify(row.get(c)) for c in ("NetworkIP", "NetworkDestinationIP", "NetworkSourceIP")
        ]
        observables.append(classify(row.get("DomainName")))
        if row.get("Url"):
            observables.append(url_host(row["Url"]))
        present = [o for o in observables if o is not None]
        values = [row.get(c) for c in ("NetworkIP", "NetworkDestinationIP", "NetworkSourceIP")]
        values += [row.get("DomainName"), row.get("Url")]
        skipped += sum(1 for v in values if v not in (None, "")) - len(present)
        common = {
            "source": f"Sentinel {LEGACY_TABLE}: {row.get('SourceSystem') or 'unknown'}",
            "confidence": _confidence(row.get("ConfidenceScore")),
            "description": row.get("Description") or row.get("ThreatType") or "",
            "valid_until": _timestamp(row.get("ExpirationDateTime")),
        }
        for indicator, kind in dict.fromkeys(present):
            found.append({"indicator": indicator, "indicator_type": kind, **common})
    return found, skipped


def _stix_indicators(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    found, skipped = [], 0
    for row in rows:
        key, value = (row.get("ObservableKey") or "").lower(), row.get("ObservableValue")
        if key in _STIX_IP_KEYS:
            observable = classify(value)
            observable = observable if observable and observable[1] != "domain" else None
        elif key == "domain-name:value":
            observable = classify(value)
            observable = observable if observable and observable[1] == "domain" else None
        elif key == "url:value":
            observable = url_host(value)
        else:
            observable = None
        if observable is None:
            skipped += 1
            continue
        data = _stix_object(row.get("Data"))
        found.append(
            {
                "indicator": observable[0],
                "indicator_type": observable[1],
                "source": f"Sentinel {STIX_TABLE}: {row.get('SourceSystem') or 'unknown'}",
                "confidence": _confidence(
                    row["Confidence"]
                    if row.get("Confidence") is not None
                    else data.get("confidence")
                ),
                "description": data.get("description") or data.get("name") or "",
                "valid_until": _timestamp(row.get("ValidUntil") or data.get("valid_until")),
            }
        )
    return found, skipped


def url_host(url: Any) -> tuple[str, str] | None:
    """A URL indicator as an IP indicator when its host is an address (module docstring)."""
    text = str(url or "").strip()
    if not text:
        return None
    try:
        host = urllib.parse.urlsplit(text if "://" in text else f"http://{text}").hostname
    except ValueError:
        return None
    observable = classify(host)
    return observable if observable and observable[1] == "ip" else None


def _confidence(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    try:
        return max(0, min(100, round(float(value))))
    except (TypeError, ValueError):
        return None


def _timestamp(value: Any) -> pd.Timestamp:
    if value in (None, ""):
        return pd.NaT
    return pd.to_datetime(value, utc=True, errors="coerce")


def _stix_object(value: Any) -> dict[str, Any]:
    """The `Data` column: the service returns dynamic values as JSON text."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}
