"""Sentinel incidents for the riskiest reported pairs, so they reach the SOC's queue directly.

One incident per pair and day, with an id derived from both (uuid5), created only when it does
not exist yet: a re-run never duplicates an incident nor overwrites what an analyst has since
changed on it (status, owner, severity). Optional: on when BEACON_INCIDENT_MIN_RISK is set.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pipeline.azure.arm import arm_error
from pipeline.azure.log import Log
from pipeline.publish.watchlist import MISSING_CONTAINER_CODES, ArmWatchlistClient
from pipeline.publish.watchlist_csv import SEARCH_KEY

# Part of the contract: changing it would raise every incident again.
INCIDENT_NAMESPACE = uuid.UUID("0c5b7f1e-8d1a-4b8e-a3f4-2d6c9e1b7a53")
# risk_score from which each severity applies (the first that the score reaches).
SEVERITIES = ((0.9, "High"), (0.75, "Medium"), (0.0, "Low"))
LABEL = "beaconing"


@dataclass
class IncidentStats:
    """What one day's incidents did."""

    eligible: int = 0  # pairs at or above the risk setting
    created: int = 0
    existing: int = 0  # already raised for this pair and day: left as the analysts keep it


def incident_id(pair_key: str, day: dt.date) -> str:
    """The incident's id: the same pair on the same day is the same incident."""
    return str(uuid.uuid5(INCIDENT_NAMESPACE, f"{pair_key}|{day.isoformat()}"))


def severity(risk: float) -> str:
    return next(name for floor, name in SEVERITIES if risk >= floor)


def incident_properties(row: dict[str, str], risk: float, day: dt.date, alias: str) -> dict:
    """The PUT body's properties; `row` holds the watchlist's (already neutralised) cells."""
    pair = f"{row['SourceIP']} → {row['DestinationIP']}:{row['DestinationPort']}/{row['Protocol']}"
    return {
        "title": f"Possible C2 beaconing: {pair}",
        "severity": severity(risk),
        "status": "New",
        "description": (
            f"Reported on {day.isoformat()} by the beaconing pipeline with risk {risk:.3f} "
            f"(beacon score {row.get('score', '')}, {row.get('connections', '')} connections, "
            f"median interval {row.get('median_interval_s', '')} s): {row.get('reasons', '')}. "
            f"Details: _GetWatchlist('{alias}') | where {SEARCH_KEY} == "
            f'"{row[SEARCH_KEY]}"'
        ),
        "labels": [{"labelName": LABEL, "labelType": "User"}],
    }


def raise_incidents(
    client: ArmWatchlistClient,
    rows: list[dict[str, str]],
    day: dt.date,
    min_risk: float,
    log: Log,
) -> IncidentStats:
    """Create the day's missing incidents for pairs whose risk_score reaches `min_risk`."""
    stats = IncidentStats()
    base = client.target.arm_endpoint.rstrip("/") + client.target.workspace_path
    seen: set[str] = set()
    for row in rows:
        risk = _risk(row)
        if risk is None or risk < min_risk or row[SEARCH_KEY] in seen:
            continue
        seen.add(row[SEARCH_KEY])
        stats.eligible += 1
        ident = incident_id(row[SEARCH_KEY], day)
        url = f"{base}/providers/Microsoft.SecurityInsights/incidents/{ident}"
        what = f"raise incident {ident} for {row[SEARCH_KEY]} on {day}"
        found = client.send("GET", url, what)
        if found.status_code == 200:
            stats.existing += 1
            continue
        if found.status_code != 404 or arm_error(found)[0] in MISSING_CONTAINER_CODES:
            raise client.error_for(found, what)
        body: dict[str, Any] = {
            "properties": incident_properties(row, risk, day, client.target.alias)
        }
        created = client.send("PUT", url, what, json=body)
        if created.status_code not in (200, 201):
            raise client.error_for(created, what)
        stats.created += 1
    log.info(
        f"sentinel: {day}: {stats.eligible} pair(s) at risk >= {min_risk}: {stats.created} "
        f"incident(s) raised, {stats.existing} already raised"
    )
    return stats


def _risk(row: dict[str, str]) -> float | None:
    try:
        return float(row.get("risk_score", ""))
    except ValueError:
        return None
