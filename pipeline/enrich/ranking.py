"""The final risk ranking of reported pairs: which beacon an analyst should look at first.

    base       = score × (1 − prevalence / 2)     a timer many hosts share is less likely C2
    risk_score = clip(base + bonuses, 0, 1)
    bonuses    + 0.30 × TI confidence / 100       threat intel names the destination (confidence
                                                  unknown counts as 50) — the strongest signal
               + 0.10  hosting_provider           destination ASN is a cloud/VPS host (geoip.py)
               + 0.05  new_asn                    the ASN first appeared among the window's
                                                  destinations in its last 7 days
               + 0.05  new_destination            nobody reached the destination before (7 days)
               + 0.05  new pair                   first_seen_age_days < 2: a timer that just began

Ties: a TI match first, then beacons before strobes, then more connections. Enrichment columns
that are missing or unknown (<NA>: no database configured) add nothing. `risk_rank` 1 = first.
"""

from __future__ import annotations

import pandas as pd

NEW_PAIR_DAYS = 2
NEW_PAIR_BONUS = 0.05
NEW_DESTINATION_BONUS = 0.05
NEW_ASN_BONUS = 0.05
HOSTING_BONUS = 0.10
TI_WEIGHT = 0.30
TI_UNKNOWN_CONFIDENCE = 50


def _flag(candidates: pd.DataFrame, column: str) -> pd.Series:
    """A boolean column as 0/1 floats, <NA> or absent = 0."""
    if column not in candidates:
        return pd.Series(0.0, index=candidates.index)
    return candidates[column].astype("boolean").fillna(False).astype(float)


def risk_scores(candidates: pd.DataFrame) -> pd.Series:
    """The formula of the module docstring, one value per row."""
    risk = candidates["score"] * (1 - candidates["prevalence"] / 2)
    risk += (candidates["first_seen_age_days"] < NEW_PAIR_DAYS).astype(float) * NEW_PAIR_BONUS
    risk += _flag(candidates, "new_destination") * NEW_DESTINATION_BONUS
    risk += _flag(candidates, "new_asn") * NEW_ASN_BONUS
    risk += _flag(candidates, "hosting_provider") * HOSTING_BONUS
    if "ti_confidence" in candidates:
        confidence = candidates["ti_confidence"].astype("Float64").fillna(TI_UNKNOWN_CONFIDENCE)
        risk += _flag(candidates, "ti_match") * TI_WEIGHT * confidence.astype(float) / 100
    return risk.astype(float).clip(0, 1)


def rank(candidates: pd.DataFrame) -> pd.DataFrame:
    """Add `risk_score` and `risk_rank` and sort by them (rank 1 first)."""
    if candidates.empty:
        return candidates.assign(
            risk_score=pd.Series(dtype="float64"), risk_rank=pd.Series(dtype="int64")
        )
    ranked = candidates.assign(
        risk_score=risk_scores(candidates),
        _ti=_flag(candidates, "ti_match"),
        _beacon=candidates["kind"] == "beacon",
    )
    ranked = ranked.sort_values(
        ["risk_score", "_ti", "_beacon", "connections"],
        ascending=[False, False, False, False],
        kind="stable",
    ).drop(columns=["_ti", "_beacon"])
    return ranked.assign(risk_rank=range(1, len(ranked) + 1)).reset_index(drop=True)
