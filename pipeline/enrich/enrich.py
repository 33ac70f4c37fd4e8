"""Put context on reported pairs (GeoIP/ASN, RDAP, threat intel) and rank them by risk.

The enriched_beacons asset calls `enrich_days`: one pass over the days of a run, so each
database, indicator file and RDAP cache is opened once, and each destination looked up once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa

from pipeline.enrich import rdap, threat_intel
from pipeline.enrich.geoip import GEO_COLUMNS, GeoIP
from pipeline.enrich.ranking import rank
from pipeline.lake import Lake, read_bytes, window_days, windows_span
from pipeline.lake.schemas import BEACONING_CANDIDATES
from pipeline.settings import Settings

PAIR_DAILY_STATS = "pair_daily_stats"
# new_asn: the ASN first appeared among the window's destinations this recently (same span as
# new_destination in beaconing_candidates).
NEW_ASN_DAYS = 7
# A destination more than half of the internal hosts reach is where the network works, not
# where one implant calls home: such a pair is reported only when the destination is new or
# threat intel names it. The candidates table keeps it (counted in the metadata).
POPULAR_PREVALENCE = 0.5
# ...and by at least this many of them: in a capture of one or a few hosts every destination is
# reached by "all of them", which says nothing about popularity.
POPULAR_MIN_HOSTS = 10
NEW_ASN_COLUMNS: dict[str, str] = {"new_asn": "boolean"}
RANK_COLUMNS: dict[str, str] = {"risk_score": "float64", "risk_rank": "int64"}
# Every column enrichment adds, in output order, with the dtype it has even on an empty day.
ENRICHED_COLUMNS: dict[str, str] = {
    **GEO_COLUMNS,
    **NEW_ASN_COLUMNS,
    **rdap.WHOIS_COLUMNS,
    **threat_intel.MATCH_COLUMNS,
    **RANK_COLUMNS,
}
# Spark types of beaconing_candidates as pandas dtypes, for the columns of an empty day.
_SPARK_TO_PANDAS = {
    "string": "string",
    "int": "Int32",
    "bigint": "Int64",
    "double": "float64",
    "boolean": "boolean",
    "timestamp": "datetime64[ns]",
    "array<bigint>": pd.ArrowDtype(pa.list_(pa.int64())),  # interval_histogram
    "array<string>": pd.ArrowDtype(pa.list_(pa.string())),  # destination_ips
}


@dataclass
class Enriched:
    """The enriched frame of each day, and what each source contributed (for metadata)."""

    days: dict[dt.date, pd.DataFrame]
    sources: dict[str, Any]


class SentinelIndicators(Protocol):
    """Sentinel's active indicators at `now` (None when no workspace is configured)."""

    def __call__(self, settings: Settings, *, now: dt.datetime) -> pd.DataFrame | None: ...


def enrich_days(
    settings: Settings,
    candidates_by_day: dict[dt.date, pd.DataFrame],
    now: dt.datetime,
    sentinel_indicators: SentinelIndicators | None = None,
) -> Enriched:
    """Enrich and rank each day's candidates; `sentinel_indicators` adds Sentinel's TI."""
    sources: dict[str, Any] = {
        "prevalence": "internal hosts reaching the destination in the window "
        "(beaconing_candidates)",
        "first_seen_age_days / new_destination": "the lookback window (beaconing_candidates)",
    }
    all_candidates = [f for f in candidates_by_day.values() if not f.empty]
    destinations = (
        pd.concat([f["DestinationIP"] for f in all_candidates], ignore_index=True)
        if all_candidates
        else pd.Series([], dtype=object)
    )

    # Threat intel: one frame per source in the schema of threat_intel.INDICATOR_COLUMNS.
    local_frame, sources["threat_intel_file"] = load_local_indicators(settings, now)
    indicator_frames: list[pd.DataFrame | None] = [local_frame]
    if sentinel_indicators is not None:
        # The same `now` as every other source: a run's indicators are those valid at its time.
        sentinel_frame = sentinel_indicators(settings, now=now)
        indicator_frames.append(sentinel_frame)
        sources["threat_intel_sentinel"] = (
            "not configured (LOG_ANALYTICS_WORKSPACE_ID)"
            if sentinel_frame is None
            else {
                "indicators": len(sentinel_frame),
                **sentinel_frame.attrs.get("sentinel_sources", {}),
            }
        )

    whois, whois_report = rdap.enrich(
        destinations,
        settings.lake_url,
        enabled=settings.rdap,
        client=rdap.RdapClient(settings.rdap_url, settings.rdap_rate_per_second)
        if settings.rdap
        else None,
        cache_days=settings.rdap_cache_days,
        max_lookups=settings.rdap_max_lookups,
        now=now,
    )
    sources["rdap"] = {**whois_report.as_dict(), "url": settings.rdap_url}
    if not settings.rdap:
        sources["rdap"]["note"] = "BEACON_RDAP=off: cached answers only, no lookups"

    days: dict[dt.date, pd.DataFrame] = {}
    ti_matched = 0
    held_back: dict[str, int] = {}
    with GeoIP(settings.geoip_city_db, settings.geoip_asn_db) as geoip:
        first_days = _asn_days(settings, geoip, list(candidates_by_day))
        for day, candidates in candidates_by_day.items():
            if candidates.empty:
                days[day] = empty_enriched()
                continue
            frame = _typed_null_strings(candidates.reset_index(drop=True))
            geo = geoip.lookup(frame["DestinationIP"])
            new_asn = _new_asn(geo["asn"], first_days, day, settings.lookback_days, geoip.has_asn)
            who = whois.reindex(frame["DestinationIP"].astype(str)).set_index(frame.index)
            matches = threat_intel.match_indicators(frame, indicator_frames, now)
            ti_matched += int(matches["ti_match"].sum())
            enriched = pd.concat([frame, geo, new_asn, who, matches], axis=1)
            popular = held_back_as_popular(enriched)
            if popular.any():
                held_back[day.isoformat()] = int(popular.sum())
            days[day] = rank(enriched[~popular]) if (~popular).any() else empty_enriched()
        sources["geoip_city"] = _geo_source(
            settings.geoip_city_db, "BEACON_GEOIP_CITY_DB", days, "geo_country"
        )
        sources["geoip_asn"] = _geo_source(
            settings.geoip_asn_db, "BEACON_GEOIP_ASN_DB", days, "asn"
        )
        if geoip.has_asn:
            sources["geoip_asn"]["hosting_provider"] = _count(days, "hosting_provider")
            sources["geoip_asn"]["new_asn"] = _count(days, "new_asn")
    sources["threat_intel_matches"] = ti_matched
    sources["held_back_popular"] = {
        "rule": f"destination reached by more than {POPULAR_PREVALENCE:.0%} of internal hosts "
        f"(and {POPULAR_MIN_HOSTS} at least), not new, no threat-intel match (kept in "
        "beaconing_candidates)",
        "pairs_per_day": held_back,
    }
    return Enriched(days=days, sources=sources)


def popular_destination(candidates: pd.DataFrame) -> pd.Series:
    """Rows to a destination more than `POPULAR_PREVALENCE` of (and `POPULAR_MIN_HOSTS`)
    internal hosts reach."""
    hosts = candidates["internal_sources_to_destination"].astype("Int64").fillna(0)
    popular = (candidates["prevalence"] > POPULAR_PREVALENCE) & (hosts >= POPULAR_MIN_HOSTS)
    return popular.astype(bool)


def held_back_as_popular(candidates: pd.DataFrame) -> pd.Series:
    """The popular rows that are neither new nor named by threat intel: not reported."""
    new = candidates["new_destination"].astype("boolean").fillna(False)
    matched = candidates["ti_match"].astype("boolean").fillna(False)
    return (popular_destination(candidates) & ~new & ~matched).astype(bool)


def load_local_indicators(
    settings: Settings, now: dt.datetime
) -> tuple[pd.DataFrame | None, dict[str, Any] | str]:
    """The local indicator file's frame and report; (None, why) when there is no file.

    BEACON_THREAT_INTEL_FILE set but missing is an error (the setting points nowhere); the
    default locations `{lake}/reference/indicators.json` / `.csv` are simply optional.
    """
    if settings.threat_intel_file:
        candidates, explicit = [settings.threat_intel_file], True
    else:
        lake = Lake(settings.lake_url)
        candidates = [lake.reference_url("indicators.json"), lake.reference_url("indicators.csv")]
        explicit = False
    for url in candidates:
        content = read_bytes(url)
        if content is None:
            continue
        text = content.decode("utf-8-sig", errors="replace")
        frame, report = threat_intel.read_indicator_file(url, text, now)
        return frame, report.as_dict()
    if explicit:
        raise threat_intel.ThreatIntelFileError(
            f"BEACON_THREAT_INTEL_FILE={settings.threat_intel_file!r}: file not found; fix the "
            "path, or leave it empty to use {lake}/reference/indicators.json when present"
        )
    return None, f"not configured: no file at {' or '.join(candidates)}"


def _typed_null_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """A text column that is null on every row (destination_hostname when the firewall does not
    log it) reads back as untyped; give it its string type so every day has the same schema."""
    out = frame.copy()
    for f in BEACONING_CANDIDATES.fields:
        if f.dataType.simpleString() == "string" and f.name in out and out[f.name].isna().all():
            out[f.name] = out[f.name].astype("string")
    return out


def empty_enriched() -> pd.DataFrame:
    """A day with no candidates: no rows, every column with its fixed dtype."""
    columns = {
        f.name: pd.Series(dtype=_SPARK_TO_PANDAS.get(f.dataType.simpleString(), "object"))
        for f in BEACONING_CANDIDATES.fields
    }
    columns.update({c: pd.Series(dtype=t) for c, t in ENRICHED_COLUMNS.items()})
    return pd.DataFrame(columns)


@dataclass
class AsnHistory:
    """Per ASN the days it was among all destinations of the run's windows, and data days."""

    days_by_asn: dict[int, list[dt.date]]
    data_days: list[dt.date]


def _asn_days(settings: Settings, geoip: GeoIP, days: list[dt.date]) -> AsnHistory:
    """Read the destinations of pair_daily_stats over every window of the run, map to ASNs."""
    if not geoip.has_asn or not days:
        return AsnHistory({}, [])
    span = windows_span(days, settings.lookback_days)
    lake = Lake(settings.lake_url)
    per_asn: dict[int, set[dt.date]] = {}
    asn_of: dict[str, int | None] = {}
    data_days = lake.days_present(PAIR_DAILY_STATS, span)
    for day in data_days:
        # Only the destination column: the window's pairs can be many, their IPs far fewer.
        destinations = lake.read_day_columns(PAIR_DAILY_STATS, day, columns=["DestinationIP"])
        if destinations is None:
            continue  # A day without pairs has no parquet files to read.
        for address in destinations["DestinationIP"].unique():
            if address not in asn_of:
                asn_of[address] = geoip.asn_of(str(address))
            if asn_of[address] is not None:
                per_asn.setdefault(asn_of[address], set()).add(day)
    return AsnHistory({asn: sorted(s) for asn, s in per_asn.items()}, sorted(data_days))


def _new_asn(
    asns: pd.Series,
    history: AsnHistory,
    day: dt.date,
    lookback_days: int,
    known: bool,
) -> pd.DataFrame:
    """new_asn per row: the ASN's first day in the window is recent and not the window's first
    day with data (an ASN seen since the data began may be much older than the data)."""
    if not known:
        return pd.DataFrame({"new_asn": pd.array([None] * len(asns), dtype="boolean")}, asns.index)
    window_start = window_days(day, lookback_days)[0]
    in_window = [d for d in history.data_days if window_start <= d <= day]
    first_with_data = in_window[0] if in_window else day
    values = []
    for asn in asns:
        if asn is pd.NA or asn is None:
            values.append(None)
            continue
        seen = [d for d in history.days_by_asn.get(int(asn), []) if window_start <= d <= day]
        first = seen[0] if seen else day
        values.append(first > first_with_data and (day - first).days <= NEW_ASN_DAYS)
    return pd.DataFrame({"new_asn": pd.array(values, dtype="boolean")}, index=asns.index)


def _geo_source(
    path: str | None, setting: str, days: dict[dt.date, pd.DataFrame], column: str
) -> dict[str, Any]:
    if not path:
        return {"status": f"not configured ({setting} is empty): columns left empty"}
    rows = sum(len(f) for f in days.values())
    return {
        "status": "configured",
        "file": path.rsplit("/", 1)[-1],
        "rows": rows,
        "matched": _count_notna(days, column),
    }


def _count(days: dict[dt.date, pd.DataFrame], column: str) -> int:
    return int(sum(f[column].fillna(False).astype(bool).sum() for f in days.values() if len(f)))


def _count_notna(days: dict[dt.date, pd.DataFrame], column: str) -> int:
    return int(sum(f[column].notna().sum() for f in days.values() if len(f)))
