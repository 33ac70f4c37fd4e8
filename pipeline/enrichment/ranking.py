"""The final risk ranking of reported pairs (GeoIP, WHOIS and threat intel will add to it).

risk_score = score × (1 − prevalence / 2), plus 0.05 when the pair was first seen in the last two
days of the window (new timers are more suspicious than old ones), clipped to [0, 1]. Beacons
rank before strobes at equal risk.
"""

from __future__ import annotations

import pandas as pd

NEW_PAIR_DAYS = 2
NEW_PAIR_BONUS = 0.05


def rank(candidates: pd.DataFrame) -> pd.DataFrame:
    if candidates.empty:
        return candidates.assign(risk_score=pd.Series(dtype=float), risk_rank=pd.Series(dtype=int))
    risk = candidates["score"] * (1 - candidates["prevalence"] / 2)
    risk += (candidates["first_seen_age_days"] < NEW_PAIR_DAYS) * NEW_PAIR_BONUS
    ranked = candidates.assign(risk_score=risk.clip(0, 1), beacon=candidates["kind"] == "beacon")
    ranked = ranked.sort_values(
        ["risk_score", "beacon", "connections"], ascending=[False, False, False], kind="stable"
    ).drop(columns="beacon")
    return ranked.assign(risk_rank=range(1, len(ranked) + 1)).reset_index(drop=True)
