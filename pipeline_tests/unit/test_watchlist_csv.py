"""Unit tests of the Sentinel watchlist CSV (pipeline.publish.watchlist_csv) and the final
risk ranking (pipeline.enrich.ranking). Pandas only, no Spark."""

from __future__ import annotations

import csv
import io
import uuid

import numpy as np
import pandas as pd
import pytest

from pipeline.enrich.ranking import NEW_PAIR_BONUS, NEW_PAIR_DAYS, rank
from pipeline.publish.watchlist_csv import (
    COLUMNS,
    FORMULA_PREFIXES,
    item_id,
    pair_key,
    safe_cell,
    watchlist_csv,
    watchlist_rows,
)

ENRICHMENT_COLUMNS = [
    "ti_match",
    "ti_source",
    "ti_confidence",
    "ti_description",
    "geo_country",
    "asn",
    "as_org",
    "hosting_provider",
    "whois_registrant",
]

# --- safe_cell ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x")', "-", "="],
)
def test_safe_cell_neutralises_formula_prefixes(text):
    assert safe_cell(text) == "'" + text


def test_formula_prefixes_are_the_owasp_set():
    assert set(FORMULA_PREFIXES) == {"=", "+", "-", "@", "\t", "\r"}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("Zürich ✓", "Zürich ✓"),
        ("a=b", "a=b"),
        (" =1", " =1"),
        ("'quoted", "'quoted"),
        ("", ""),
        (443, "443"),
        (0.5, "0.5"),
        (None, ""),
        (float("nan"), ""),
        (np.nan, ""),
    ],
)
def test_safe_cell_leaves_normal_values_alone(value, text):
    assert safe_cell(value) == text


def test_negative_numbers_stay_numeric_but_negative_looking_strings_do_not():
    # A number's text is read back as that number, never as a formula (decision: issue 8).
    assert safe_cell(-3) == "-3"
    assert safe_cell(-0.25) == "-0.25"
    assert safe_cell(np.int64(-1)) == "-1"
    assert safe_cell(np.float64(-1e-05)) == "-1e-05"
    assert safe_cell("-3") == "'-3"  # text is text: it could be "-3+cmd|..."
    assert safe_cell("-1+cmd|' /C calc'!A0") == "'-1+cmd|' /C calc'!A0"
    assert safe_cell(True) == "True"


# --- watchlist_csv -----------------------------------------------------------------------------


def enriched(rows: list[dict] | None = None) -> pd.DataFrame:
    """An enriched_beacons frame with the columns watchlist_csv reads (plus one it drops)."""
    base = {
        "SourceIP": "10.20.0.24",
        "DestinationIP": "203.0.113.50",
        "DestinationPort": 443,
        "Protocol": "TCP",
        "kind": "beacon",
        "risk_score": 0.912345,
        "score": 0.95678,
        "connections": 1694,
        "median_interval_s": 51.0833,
        "prevalence": 0.025,
        "first_seen": pd.Timestamp("2026-03-01 10:00:00.123456"),
        "last_seen": pd.Timestamp("2026-03-04 23:59:58.9"),
        "reasons": "interval 51 s ± 9%, 100% of hours active",
        "date": "2026-03-04",
        "risk_rank": 1,
        "timing_score": 0.94,  # not a watchlist column
    }
    rows = rows if rows is not None else [{}]
    return pd.DataFrame([{**base, **row} for row in rows])


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_header_lists_the_key_columns_first():
    header, *_ = parse(watchlist_csv(enriched()))
    assert header == COLUMNS
    assert header[:3] == ["SourceIP", "DestinationIP", "DestinationPort"]
    assert "timing_score" not in header


def test_one_row_is_formatted():
    header, row = parse(watchlist_csv(enriched()))
    record = dict(zip(header, row, strict=True))
    assert record == {
        "SourceIP": "10.20.0.24",
        "DestinationIP": "203.0.113.50",
        "DestinationPort": "443",
        "Protocol": "TCP",
        "PairKey": "10.20.0.24|203.0.113.50|443|TCP",
        "kind": "beacon",
        "destination_hostname": "",
        "destination_ips": "",
        "risk_rank": "1",
        "risk_score": "0.912",
        "score": "0.957",
        "connections": "1694",
        "median_interval_s": "51.1",
        "prevalence": "0.025",
        "first_seen": "2026-03-01T10:00:00Z",
        "last_seen": "2026-03-04T23:59:58Z",
        "reasons": "interval 51 s ± 9%, 100% of hours active",
        # Not enriched (no GeoIP, RDAP or threat intel configured): empty cells.
        **dict.fromkeys(ENRICHMENT_COLUMNS, ""),
        "date": "2026-03-04",
    }


def test_enrichment_reaches_the_watchlist_and_unknowns_stay_empty():
    frame = enriched([{}, {"SourceIP": "10.20.0.8"}])
    frame["ti_match"] = pd.Series([True, False], dtype="bool")
    frame["ti_source"] = pd.Series(
        ["Sentinel ThreatIntelligenceIndicator: MDTI", pd.NA], dtype="string"
    )
    frame["ti_confidence"] = pd.Series([90, pd.NA], dtype="Int64")
    frame["as_org"] = pd.Series(["=cmd|' /C calc'!A0", pd.NA], dtype="string")
    frame["asn"] = pd.Series([16509, pd.NA], dtype="Int64")
    frame["hosting_provider"] = pd.Series([True, pd.NA], dtype="boolean")
    header, *rows = parse(watchlist_csv(frame))
    first, second = (dict(zip(header, row, strict=True)) for row in rows)
    assert first["ti_match"] == "True"
    assert first["ti_confidence"] == "90"
    assert first["asn"] == "16509"
    assert first["as_org"] == "'=cmd|' /C calc'!A0"
    assert first["hosting_provider"] == "True"
    assert [second[c] for c in ("ti_source", "ti_confidence", "as_org", "asn")] == [""] * 4


def test_lines_end_with_crlf():
    text = watchlist_csv(enriched([{}, {"SourceIP": "10.20.0.8"}]))
    assert text.endswith("\r\n")
    assert text.count("\r\n") == 3


@pytest.mark.parametrize(
    ("first_seen", "last_seen"),
    [
        ("2026-03-01 10:00:00", "2026-03-02T11:30:00"),
        (pd.Timestamp("2026-03-01 10:00:00", tz="UTC"), pd.Timestamp("2026-03-02 11:30", tz="UTC")),
        (pd.Timestamp("2026-03-01 10:00:00.999"), pd.Timestamp("2026-03-02 11:30:00.5")),
    ],
    ids=["strings", "utc", "naive with fractions"],
)
def test_timestamps_are_written_in_utc_z_form_to_the_second(first_seen, last_seen):
    frame = enriched([{"first_seen": first_seen, "last_seen": last_seen}] * 2)
    header, *rows = parse(watchlist_csv(frame))
    assert len(rows) == 2
    for row in rows:
        record = dict(zip(header, row, strict=True))
        assert record["first_seen"] == "2026-03-01T10:00:00Z"
        assert record["last_seen"] == "2026-03-02T11:30:00Z"


def test_hostile_values_round_trip_with_formulas_neutralised():
    hostile = {
        "SourceIP": "@10.0.0.1",
        "DestinationIP": "=cmd|' /C calc'!A0",
        "Protocol": "+TCP",
        "kind": "-beacon",
        "reasons": '=HYPERLINK("http://x")',
        "date": 'say "hi",\nthen leave',
    }
    quiet = {"reasons": 'a "quoted", multi\r\nline\nreason in Zürich ✓', "date": "\tdate"}
    header, first, second = parse(watchlist_csv(enriched([hostile, quiet])))
    first = dict(zip(header, first, strict=True))
    second = dict(zip(header, second, strict=True))
    assert first["SourceIP"] == "'@10.0.0.1"
    assert first["DestinationIP"] == "'=cmd|' /C calc'!A0"
    assert first["Protocol"] == "'+TCP"
    assert first["kind"] == "'-beacon"
    assert first["reasons"] == '\'=HYPERLINK("http://x")'
    assert first["date"] == 'say "hi",\nthen leave'
    # The key is built from the raw values, then neutralised like any other cell.
    assert first["PairKey"] == "'@10.0.0.1|=cmd|' /C calc'!A0|443|+TCP"
    assert second["reasons"] == 'a "quoted", multi\r\nline\nreason in Zürich ✓'
    assert second["date"] == "'\tdate"
    assert second["SourceIP"] == "10.20.0.24"
    # Nothing in any cell can start a formula.
    for row in (first, second):
        assert not any(cell.startswith(FORMULA_PREFIXES) for cell in row.values())


def test_non_ascii_survives_utf8_encoding():
    text = watchlist_csv(enriched([{"reasons": "Zürich ✓ 東京"}]))
    decoded = text.encode("utf-8").decode("utf-8")
    assert parse(decoded)[1][COLUMNS.index("reasons")] == "Zürich ✓ 東京"


def test_missing_values_are_empty_cells():
    frame = enriched([{"reasons": None, "prevalence": np.nan}]).drop(columns=["kind"])
    header, row = parse(watchlist_csv(frame))
    record = dict(zip(header, row, strict=True))
    assert record["reasons"] == ""
    assert record["prevalence"] == ""
    assert record["kind"] == ""


@pytest.mark.parametrize(
    "frame",
    [pd.DataFrame(), enriched().iloc[0:0]],
    ids=["no columns", "enriched columns, no rows"],
)
def test_empty_frame_gives_the_header_only(frame):
    text = watchlist_csv(frame)
    assert text == ",".join(COLUMNS) + "\r\n"
    assert parse(text) == [COLUMNS]


def test_watchlist_csv_does_not_modify_its_input():
    frame = enriched()
    before = frame.copy()
    watchlist_csv(frame)
    pd.testing.assert_frame_equal(frame, before)


# --- item_id / pair_key ------------------------------------------------------------------------


def test_pair_key_joins_the_four_key_columns():
    row = enriched().iloc[0]
    assert pair_key(row) == "10.20.0.24|203.0.113.50|443|TCP"


def test_item_id_is_deterministic_and_a_uuid5():
    key = "10.20.0.24|203.0.113.50|443|TCP"
    assert item_id(key) == item_id(key)
    parsed = uuid.UUID(item_id(key))
    assert parsed.version == 5
    # The namespace is part of the contract: changing it re-creates every watchlist item.
    namespace = uuid.UUID("6f1d6d5e-2b7c-4f7e-9d0a-5b1c3e9a7f21")
    assert item_id(key) == str(uuid.uuid5(namespace, key))


def test_item_id_differs_per_key():
    keys = [
        "10.20.0.24|203.0.113.50|443|TCP",
        "10.20.0.24|203.0.113.50|443|UDP",
        "10.20.0.24|203.0.113.50|8443|TCP",
        "10.20.0.25|203.0.113.50|443|TCP",
    ]
    assert len({item_id(k) for k in keys}) == len(keys)


# --- rank --------------------------------------------------------------------------------------


def candidates(rows: list[dict]) -> pd.DataFrame:
    base = {
        "SourceIP": "10.0.0.1",
        "DestinationIP": "203.0.113.1",
        "kind": "beacon",
        "score": 0.9,
        "prevalence": 0.0,
        "first_seen_age_days": 10,
        "connections": 100,
    }
    return pd.DataFrame([{**base, **row} for row in rows])


def test_risk_score_applies_the_prevalence_penalty_and_new_pair_bonus():
    ranked = rank(
        candidates(
            [
                {"SourceIP": "old", "score": 0.9, "prevalence": 0.0, "first_seen_age_days": 10},
                {"SourceIP": "common", "score": 0.9, "prevalence": 0.5, "first_seen_age_days": 10},
                {"SourceIP": "new", "score": 0.8, "prevalence": 0.0, "first_seen_age_days": 0},
                {"SourceIP": "1 day", "score": 0.7, "prevalence": 0.2, "first_seen_age_days": 1},
                {"SourceIP": "2 days", "score": 0.7, "prevalence": 0.2, "first_seen_age_days": 2},
            ]
        )
    )
    risk = dict(zip(ranked["SourceIP"], ranked["risk_score"], strict=True))
    assert risk["old"] == pytest.approx(0.9)
    assert risk["common"] == pytest.approx(0.9 * 0.75)
    assert risk["new"] == pytest.approx(0.8 + NEW_PAIR_BONUS)
    assert risk["1 day"] == pytest.approx(0.7 * 0.9 + NEW_PAIR_BONUS)
    assert risk["2 days"] == pytest.approx(0.7 * 0.9)  # age 2 is no longer new
    assert NEW_PAIR_DAYS == 2
    # 0.9 > 0.85 > 0.68 > 0.675 > 0.63: the bonus lifts "1 day" over the prevalent pair.
    assert list(ranked["SourceIP"]) == ["old", "new", "1 day", "common", "2 days"]
    assert list(ranked["risk_rank"]) == [1, 2, 3, 4, 5]
    assert list(ranked.index) == [0, 1, 2, 3, 4]


def test_risk_score_is_clipped_to_one():
    ranked = rank(candidates([{"score": 1.0, "prevalence": 0.0, "first_seen_age_days": 0}]))
    assert ranked["risk_score"].tolist() == [1.0]


def test_fully_prevalent_pair_keeps_half_its_score():
    ranked = rank(candidates([{"score": 0.8, "prevalence": 1.0}]))
    assert ranked["risk_score"].tolist() == [pytest.approx(0.4)]


def test_ties_rank_beacons_before_strobes_then_more_connections_first():
    ranked = rank(
        candidates(
            [
                {"SourceIP": "strobe", "kind": "strobe", "score": 0.9, "connections": 200_000},
                {"SourceIP": "beacon few", "connections": 50},
                {"SourceIP": "beacon many", "connections": 5000},
                {"SourceIP": "top", "score": 0.95, "connections": 10},
            ]
        )
    )
    assert list(ranked["SourceIP"]) == ["top", "beacon many", "beacon few", "strobe"]
    assert list(ranked["risk_rank"]) == [1, 2, 3, 4]
    assert "beacon" not in ranked.columns


def test_rank_keeps_the_input_columns_and_does_not_modify_its_input():
    frame = candidates([{"score": 0.5}, {"score": 0.6}])
    before = frame.copy()
    ranked = rank(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert list(ranked.columns) == [*frame.columns, "risk_score", "risk_rank"]
    assert ranked["risk_rank"].dtype.kind == "i"


def test_rank_of_an_unordered_frame_with_a_gappy_index():
    frame = candidates([{"score": s, "SourceIP": str(s)} for s in (0.2, 0.9, 0.5, 0.7)])
    frame.index = [10, 3, 7, 42]
    ranked = rank(frame)
    assert list(ranked["SourceIP"]) == ["0.9", "0.7", "0.5", "0.2"]
    assert list(ranked.index) == [0, 1, 2, 3]
    assert list(ranked["risk_rank"]) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "frame",
    [pd.DataFrame(), candidates([]), candidates([{}]).iloc[0:0]],
    ids=["no columns", "no rows", "typed columns, no rows"],
)
def test_rank_of_an_empty_frame_is_empty_with_the_rank_columns(frame):
    ranked = rank(frame)
    assert len(ranked) == 0
    assert {"risk_score", "risk_rank"} <= set(ranked.columns)
    assert ranked["risk_score"].dtype == float
    assert ranked["risk_rank"].dtype.kind == "i"


def test_ranked_frame_feeds_the_watchlist():
    frame = candidates(
        [
            {"SourceIP": "10.0.0.2", "score": 0.7},
            {"SourceIP": "10.0.0.3", "score": 0.99, "first_seen_age_days": 0},
        ]
    ).assign(
        DestinationPort=443,
        Protocol="TCP",
        median_interval_s=60.0,
        first_seen="2026-03-01 00:00:00",
        last_seen="2026-03-02 00:00:00",
        reasons="r",
        date="2026-03-02",
    )
    header, *rows = parse(watchlist_csv(rank(frame)))
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert [(r["risk_rank"], r["SourceIP"], r["risk_score"]) for r in records] == [
        ("1", "10.0.0.3", "1.0"),
        ("2", "10.0.0.2", "0.7"),
    ]
    assert parse(watchlist_csv(rank(frame.iloc[0:0]))) == [COLUMNS]


def test_a_beacon_scored_by_name_is_keyed_by_the_name_and_lists_its_addresses():
    by_name = {
        "destination_hostname": "cdn.c2.example",
        "destination_ips": np.array(["198.51.100.1", "198.51.100.2"], dtype=object),
    }
    long = {"kind": "long_connection", "destination_ips": np.array(["203.0.113.50"], dtype=object)}
    rows = watchlist_rows(enriched([by_name, long, {}]))
    assert rows[0]["PairKey"] == "10.20.0.24|cdn.c2.example|443|TCP"
    assert rows[0]["destination_ips"] == "198.51.100.1 198.51.100.2"
    assert rows[0]["destination_hostname"] == "cdn.c2.example"
    # A long connection and a beacon on the same pair are two items.
    assert rows[1]["PairKey"] == "10.20.0.24|203.0.113.50|443|TCP|long_connection"
    assert rows[2]["PairKey"] == "10.20.0.24|203.0.113.50|443|TCP"
