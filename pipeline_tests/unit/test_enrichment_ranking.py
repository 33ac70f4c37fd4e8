"""The final risk ranking with enrichment (pipeline.enrich.ranking): asserted orderings."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.enrich import ranking
from pipeline.enrich.ranking import rank, risk_scores


def pairs(rows: list[dict]) -> pd.DataFrame:
    base = {
        "SourceIP": "10.0.0.1",
        "DestinationIP": "198.51.100.1",
        "kind": "beacon",
        "score": 0.8,
        "prevalence": 0.0,
        "first_seen_age_days": 10,
        "connections": 100,
        "new_destination": False,
        "new_asn": False,
        "hosting_provider": False,
        "ti_match": False,
        "ti_confidence": pd.NA,
    }
    frame = pd.DataFrame([{**base, **row} for row in rows])
    frame["ti_confidence"] = frame["ti_confidence"].astype("Int64")
    for column in ("new_asn", "hosting_provider", "new_destination"):
        frame[column] = frame[column].astype("boolean")
    return frame


def test_each_enrichment_signal_adds_its_documented_bonus():
    frame = pairs(
        [
            {"SourceIP": "plain"},
            {"SourceIP": "new dest", "new_destination": True},
            {"SourceIP": "new asn", "new_asn": True},
            {"SourceIP": "hosting", "hosting_provider": True},
            {"SourceIP": "ti 100", "ti_match": True, "ti_confidence": 100},
            {"SourceIP": "ti unknown", "ti_match": True},
        ]
    )
    risk = dict(zip(frame["SourceIP"], risk_scores(frame), strict=True))
    assert risk["plain"] == pytest.approx(0.8)
    assert risk["new dest"] == pytest.approx(0.8 + ranking.NEW_DESTINATION_BONUS)
    assert risk["new asn"] == pytest.approx(0.8 + ranking.NEW_ASN_BONUS)
    assert risk["hosting"] == pytest.approx(0.8 + ranking.HOSTING_BONUS)
    assert risk["ti 100"] == 1.0  # clipped
    assert risk["ti unknown"] == pytest.approx(
        min(1.0, 0.8 + ranking.TI_WEIGHT * ranking.TI_UNKNOWN_CONFIDENCE / 100)
    )


def test_threat_intel_lifts_a_weaker_timer_over_stronger_unmatched_ones():
    ranked = rank(
        pairs(
            [
                {"SourceIP": "strong", "score": 0.85},
                {
                    "SourceIP": "weak but known C2",
                    "score": 0.6,
                    "ti_match": True,
                    "ti_confidence": 90,
                },
                {
                    "SourceIP": "medium on a VPS",
                    "score": 0.75,
                    "hosting_provider": True,
                    "new_asn": True,
                },
                {"SourceIP": "prevalent", "score": 0.9, "prevalence": 0.6},
            ]
        )
    )
    # VPS + new ASN 0.75+0.10+0.05 = 0.90 > known C2 0.6+0.30×0.9 = 0.87 > 0.85 > 0.9×0.7.
    assert list(ranked["SourceIP"]) == [
        "medium on a VPS",
        "weak but known C2",
        "strong",
        "prevalent",
    ]
    assert list(ranked["risk_rank"]) == [1, 2, 3, 4]


def test_unknown_enrichment_adds_nothing():
    frame = pairs([{"SourceIP": "a"}, {"SourceIP": "b"}])
    for column in ("new_asn", "hosting_provider", "new_destination"):
        frame[column] = pd.array([pd.NA, pd.NA], dtype="boolean")
    assert risk_scores(frame).tolist() == [pytest.approx(0.8)] * 2


def test_at_equal_risk_a_threat_intel_match_ranks_first():
    ranked = rank(
        pairs(
            [
                {"SourceIP": "no ti", "score": 1.0, "connections": 10_000},
                {
                    "SourceIP": "ti",
                    "score": 1.0,
                    "ti_match": True,
                    "ti_confidence": 10,
                    "connections": 5,
                },
            ]
        )
    )
    assert ranked["risk_score"].tolist() == [1.0, 1.0]
    assert list(ranked["SourceIP"]) == ["ti", "no ti"]


def test_frames_without_enrichment_columns_rank_as_before():
    frame = pairs([{"SourceIP": "x", "score": 0.5}, {"SourceIP": "y", "score": 0.7}])
    frame = frame.drop(
        columns=["new_asn", "hosting_provider", "ti_match", "ti_confidence", "new_destination"]
    )
    ranked = rank(frame)
    assert list(ranked["SourceIP"]) == ["y", "x"]
    assert ranked["risk_score"].tolist() == [pytest.approx(0.7), pytest.approx(0.5)]
