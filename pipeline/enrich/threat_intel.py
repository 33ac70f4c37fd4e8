"""Threat intelligence: which beacon destinations the SOC's indicators already name as bad.

Every indicator source (the local file here, Sentinel's indicator tables in
`sentinel_indicators.py`) yields a frame in ONE schema, `INDICATOR_COLUMNS`:

  indicator       str   IP address, CIDR or domain, lower-case
  indicator_type  str   'ip' | 'cidr' | 'domain'
  source          str   who said so (feed / identity name / file)
  confidence      Int64 0–100, <NA> = not stated
  description     str   why it is bad ('' when not stated)
  valid_until     datetime64[ns, UTC], NaT = no expiry

The local file lives in the lake (default `{lake}/reference/indicators.json`, or `.csv`) and is
either a STIX 2.1 bundle or a CSV with those column names (only `indicator` is required).
Malformed entries are counted and reported, never fatal: one bad line must not hide the rest.

Matching (`match_indicators`): a candidate's DestinationIP matches an 'ip' indicator exactly or
falls inside a 'cidr' (IPv4 and IPv6); its `destination_hostname` (the firewall's
DestinationHostName, when logged) matches a 'domain' indicator exactly or as a subdomain of it.
Expired indicators (valid_until in the past) are dropped first.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

INDICATOR_COLUMNS = (
    "indicator",
    "indicator_type",
    "source",
    "confidence",
    "description",
    "valid_until",
)
INDICATOR_TYPES = ("ip", "cidr", "domain")
# Columns added to enriched_beacons, with the dtype each has even on an empty day.
MATCH_COLUMNS: dict[str, str] = {
    "ti_match": "bool",
    "ti_indicator": "string",
    "ti_source": "string",
    "ti_confidence": "Int64",
    "ti_description": "string",
    "ti_matches": "int64",
}

_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$"
)
# One comparison of a STIX pattern we can express as an indicator row.
_STIX_COMPARISON = re.compile(
    r"(ipv4-addr|ipv6-addr|domain-name):value\s*(=|ISSUBSET)\s*'((?:[^'\\]|\\.)*)'",
    re.IGNORECASE,
)
_STIX_ANY_COMPARISON = re.compile(
    r"[a-z0-9-]+:[a-z0-9_.'\[\]*-]+\s*(=|!=|<|>|ISSUBSET|MATCHES|LIKE|IN)", re.I
)


class ThreatIntelFileError(ValueError):
    """The indicator file cannot be read at all (not JSON, not a bundle, no indicator column)."""


@dataclass
class FileReport:
    """What reading one indicator file found: the counts an analyst needs to trust it."""

    path: str
    status: str = "ok"
    indicators: int = 0
    malformed: int = 0
    unsupported: int = 0
    expired: int = 0
    revoked: int = 0
    examples: list[str] = field(default_factory=list)

    def problem(self, kind: str, detail: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 5:  # A few examples name what to fix; all of them would flood.
            self.examples.append(detail)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v or k in ("status", "indicators")}


def empty_indicators() -> pd.DataFrame:
    """An indicator frame with no rows but the full schema and dtypes."""
    return normalize(pd.DataFrame(columns=list(INDICATOR_COLUMNS)))


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame to the indicator schema's exact dtypes (text as str, '' for none)."""
    frame = frame.reindex(columns=list(INDICATOR_COLUMNS)).copy()
    for column in ("indicator", "indicator_type", "source", "description"):
        frame[column] = frame[column].fillna("").astype(str)
    frame["indicator"] = frame["indicator"].str.strip().str.lower()
    frame["confidence"] = pd.array(
        [_confidence(v) for v in frame["confidence"].tolist()], dtype="Int64"
    )
    frame["valid_until"] = pd.to_datetime(frame["valid_until"], utc=True, errors="coerce").astype(
        "datetime64[ns, UTC]"
    )
    return frame.reset_index(drop=True)


def classify(value: Any) -> tuple[str, str] | None:
    """(canonical lower-case indicator, 'ip' | 'cidr' | 'domain'), or None if it is neither."""
    text = str(value if value is not None else "").strip().lower()
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text)), "ip"
    except ValueError:
        pass
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return None
        if network.prefixlen == network.max_prefixlen:
            return str(network.network_address), "ip"
        return str(network), "cidr"
    text = text.rstrip(".")
    return (text, "domain") if _DOMAIN.match(text) else None


def read_indicator_file(path: str, text: str, now: dt.datetime) -> tuple[pd.DataFrame, FileReport]:
    """Parse a STIX 2.1 bundle (.json) or CSV file's text into the indicator schema."""
    report = FileReport(path=path)
    if path.lower().endswith(".csv"):
        records = _csv_records(text, path, report)
    else:
        records = _stix_records(text, path, report)
    frame = normalize(pd.DataFrame.from_records(records, columns=list(INDICATOR_COLUMNS)))
    live = frame["valid_until"].isna() | (frame["valid_until"] > pd.Timestamp(now))
    report.expired += int((~live).sum())
    frame = frame[live].reset_index(drop=True)
    report.indicators = len(frame)
    return frame, report


def _stix_records(text: str, path: str, report: FileReport) -> list[dict[str, Any]]:
    try:
        bundle = json.loads(text)
    except json.JSONDecodeError as error:
        raise ThreatIntelFileError(
            f"{path}: not valid JSON ({error}); expected a STIX 2.1 bundle, or name the file .csv"
        ) from error
    objects = bundle.get("objects") if isinstance(bundle, dict) else None
    if not isinstance(objects, list):
        raise ThreatIntelFileError(
            f"{path}: not a STIX 2.1 bundle (needs a top-level object with an 'objects' list)"
        )
    default_source = f"local file {path.rsplit('/', 1)[-1]}"
    identities = {
        o.get("id"): o.get("name")
        for o in objects
        if isinstance(o, dict) and o.get("type") == "identity" and o.get("name")
    }
    records: list[dict[str, Any]] = []
    for position, entry in enumerate(objects):
        if not isinstance(entry, dict) or entry.get("type") != "indicator":
            continue
        label = entry.get("id") or f"objects[{position}]"
        if entry.get("revoked") is True:
            report.revoked += 1
            continue
        pattern = entry.get("pattern")
        if not isinstance(pattern, str) or entry.get("pattern_type", "stix") != "stix":
            report.problem("malformed", f"{label}: no STIX pattern")
            continue
        observables = _stix_observables(pattern)
        if observables is None:
            report.problem("unsupported", f"{label}: pattern {pattern[:80]!r} is not IP/domain")
            continue
        if not observables:
            report.problem("malformed", f"{label}: bad value in pattern {pattern[:80]!r}")
            continue
        valid_until = entry.get("valid_until")
        if valid_until is not None and pd.isna(pd.to_datetime(valid_until, errors="coerce")):
            report.problem("malformed", f"{label}: valid_until {valid_until!r} is not a time")
            continue
        common = {
            "source": identities.get(entry.get("created_by_ref")) or default_source,
            "confidence": entry.get("confidence"),
            "description": entry.get("description") or entry.get("name") or "",
            "valid_until": valid_until,
        }
        for indicator, kind in observables:
            records.append({"indicator": indicator, "indicator_type": kind, **common})
    return records


def _stix_observables(pattern: str) -> list[tuple[str, str]] | None:
    """The IPs, networks and domains a pattern names; None when it is not (only) those.

    Supported: one or more `[type:value = '…']` / `ISSUBSET '…'` comparisons joined by OR. An
    AND or FOLLOWEDBY would need every part to hold, which a destination alone cannot show,
    so such patterns are reported as unsupported rather than matched too broadly.
    """
    if re.search(r"\b(AND|FOLLOWEDBY|WITHIN|REPEATS|START|STOP|NOT)\b", pattern):
        return None
    comparisons = _STIX_COMPARISON.findall(pattern)
    if not comparisons or len(comparisons) != len(_STIX_ANY_COMPARISON.findall(pattern)):
        return None
    found = []
    for object_type, _, value in comparisons:
        observable = classify(value.replace("\\'", "'"))
        wanted = ("domain",) if object_type.lower() == "domain-name" else ("ip", "cidr")
        if observable is None or observable[1] not in wanted:
            return []
        found.append(observable)
    return list(dict.fromkeys(found))


def _csv_records(text: str, path: str, report: FileReport) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "indicator" not in fields:
        raise ThreatIntelFileError(
            f"{path}: CSV needs a header with an 'indicator' column (optional: indicator_type, "
            f"source, confidence, description, valid_until); found {fields or 'no header'}"
        )
    reader.fieldnames = fields
    default_source = f"local file {path.rsplit('/', 1)[-1]}"
    records = []
    for line, row in enumerate(reader, start=2):
        observable = classify(row.get("indicator"))
        stated = (row.get("indicator_type") or "").strip().lower()
        if observable is None or (stated and stated != observable[1]):
            report.problem(
                "malformed",
                f"line {line}: {row.get('indicator')!r} is not {stated or 'an IP, CIDR or domain'}",
            )
            continue
        confidence = (row.get("confidence") or "").strip()
        if confidence and _confidence(confidence) is None:
            report.problem("malformed", f"line {line}: confidence {confidence!r} is not 0–100")
            continue
        valid_until = (row.get("valid_until") or "").strip() or None
        if valid_until and pd.isna(pd.to_datetime(valid_until, utc=True, errors="coerce")):
            report.problem("malformed", f"line {line}: valid_until {valid_until!r} is not a time")
            continue
        records.append(
            {
                "indicator": observable[0],
                "indicator_type": observable[1],
                "source": (row.get("source") or "").strip() or default_source,
                "confidence": confidence or None,
                "description": (row.get("description") or "").strip(),
                "valid_until": valid_until,
            }
        )
    return records


def _confidence(value: Any) -> int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number) if 0 <= number <= 100 else None


def live_indicators(frames: Iterable[pd.DataFrame | None], now: dt.datetime) -> pd.DataFrame:
    """All sources' indicators in one frame, expired ones dropped."""
    parts = [normalize(f) for f in frames if f is not None and len(f)]
    if not parts:
        return empty_indicators()
    merged = pd.concat(parts, ignore_index=True)
    live = merged["valid_until"].isna() | (merged["valid_until"] > pd.Timestamp(now))
    return merged[live & merged["indicator_type"].isin(INDICATOR_TYPES)].reset_index(drop=True)


def empty_matches(index: pd.Index) -> pd.DataFrame:
    """The match columns for rows that matched nothing, with their fixed dtypes."""
    return pd.DataFrame(
        {
            "ti_match": pd.Series(False, index=index, dtype="bool"),
            "ti_indicator": pd.Series(pd.NA, index=index, dtype="string"),
            "ti_source": pd.Series(pd.NA, index=index, dtype="string"),
            "ti_confidence": pd.Series(pd.NA, index=index, dtype="Int64"),
            "ti_description": pd.Series(pd.NA, index=index, dtype="string"),
            "ti_matches": pd.Series(0, index=index, dtype="int64"),
        }
    )


def match_indicators(
    candidates: pd.DataFrame, frames: Iterable[pd.DataFrame | None], now: dt.datetime
) -> pd.DataFrame:
    """Per candidate row: did any live indicator name its destination, and the best one.

    The best match is the most confident (unknown confidence counts as 50); `ti_source` lists
    every distinct source that matched, `ti_matches` how many indicators did.
    """
    result = empty_matches(candidates.index)
    indicators = live_indicators(frames, now)
    if candidates.empty or indicators.empty:
        return result
    by_value: dict[tuple[str, str], list[int]] = {}
    for position, (value, kind) in enumerate(
        zip(indicators["indicator"], indicators["indicator_type"], strict=True)
    ):
        by_value.setdefault((kind, value), []).append(position)
    # Look each address up once per prefix length present: O(rows × distinct prefix lengths).
    prefixes = {
        ipaddress.ip_network(v).prefixlen
        for v, k in zip(indicators["indicator"], indicators["indicator_type"], strict=True)
        if k == "cidr"
    }
    hostnames = (
        candidates["destination_hostname"]
        if "destination_hostname" in candidates
        else pd.Series(None, index=candidates.index)
    )
    ranked = indicators.assign(_rank=indicators["confidence"].fillna(50).astype(int))
    for row, address, hostname in zip(
        candidates.index, candidates["DestinationIP"], hostnames, strict=True
    ):
        hits = _hits(address, hostname, by_value, prefixes)
        if not hits:
            continue
        matched = ranked.iloc[sorted(hits)].sort_values("_rank", ascending=False, kind="stable")
        best = matched.iloc[0]
        result.at[row, "ti_match"] = True
        result.at[row, "ti_indicator"] = best["indicator"]
        result.at[row, "ti_source"] = "; ".join(dict.fromkeys(matched["source"]))
        result.at[row, "ti_confidence"] = best["confidence"]
        result.at[row, "ti_description"] = best["description"]
        result.at[row, "ti_matches"] = len(matched)
    return result


def _hits(
    address: Any,
    hostname: Any,
    by_value: dict[tuple[str, str], list[int]],
    prefixes: set[int],
) -> set[int]:
    hits: set[int] = set()
    try:
        ip = ipaddress.ip_address(str(address).strip())
    except ValueError:
        ip = None
    if ip is not None:
        hits.update(by_value.get(("ip", str(ip)), []))
        for length in prefixes:
            if length <= ip.max_prefixlen:
                network = ipaddress.ip_network(f"{ip}/{length}", strict=False)
                hits.update(by_value.get(("cidr", str(network)), []))
    if isinstance(hostname, str) and hostname.strip():
        labels = hostname.strip().lower().rstrip(".").split(".")
        # evil.example matches www.evil.example too, but never just "example".
        for start in range(len(labels) - 1):
            hits.update(by_value.get(("domain", ".".join(labels[start:])), []))
    return hits
