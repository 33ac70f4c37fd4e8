"""The window coverage check, a plain function behind the blocking check of beaconing_candidates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def low_coverage_days(report: Mapping[str, Mapping[str, Any]], minimum: float) -> dict[str, float]:
    """Days whose lookback window has less than `minimum` of its days in the lake.

    The window counts from where history starts (BEACON_START_DATE, or the lake's first day of
    pair_daily_stats when later): a new deployment's first days are not "missing" history, a
    hole in the lake is.
    """
    low = {}
    for day, facts in report.items():
        coverage = facts["window_days_present"] / max(int(facts.get("window_days") or 1), 1)
        if coverage < minimum:
            low[day] = round(coverage, 3)
    return low
