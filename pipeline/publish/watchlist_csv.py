"""The watchlist CSV exactly as Sentinel receives it in `rawContent`.

Key columns come first; every cell is neutralised against spreadsheet formula injection, since
analysts open watchlists in Excel (a cell starting with =, +, -, @, tab or CR is a formula).
"""

from __future__ import annotations

import csv
import io
import uuid

import numpy as np
import pandas as pd

KEY_COLUMNS = ["SourceIP", "DestinationIP", "DestinationPort"]
COLUMNS = [
    *KEY_COLUMNS,
    "Protocol",
    "PairKey",
    "kind",
    "destination_hostname",
    "destination_ips",  # space-separated: more than one for a beacon scored by host name
    "risk_rank",
    "risk_score",
    "score",
    "connections",
    "median_interval_s",
    "prevalence",
    "first_seen",
    "last_seen",
    "reasons",
    # Enrichment (docs/detection.md, "Enrichment columns"); empty where a source is not set up.
    "ti_match",
    "ti_source",
    "ti_confidence",
    "ti_description",
    "geo_country",
    "asn",
    "as_org",
    "hosting_provider",
    "whois_registrant",
    "date",
]
SEARCH_KEY = "PairKey"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Deterministic item ids: the same pair is the same watchlist item on every run.
ITEM_NAMESPACE = uuid.UUID("6f1d6d5e-2b7c-4f7e-9d0a-5b1c3e9a7f21")


def safe_cell(value: object) -> str:
    """The cell's text, with a leading `'` when a spreadsheet would read it as a formula.

    Numbers (int, float, numpy numbers; not bools) are written as they are: the text of a number
    (`-1`, `-0.25`, `-1e-05`) is read back as that number, never as a formula, so a negative
    value stays numeric for the analyst. Every string is checked, whatever it looks like
    (`"-1+cmd|' /C calc'!A0"` is a string, and is neutralised).
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float | np.floating) and pd.isna(value):
        return ""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    ):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def pair_key(row: pd.Series) -> str:
    """The item's identity across runs: a beacon scored by host name is keyed by the name (its
    most used address changes), and a long connection apart from a beacon on the same pair."""
    ips = row.get("destination_ips")
    by_name = ips is not None and not _is_missing(ips) and len(ips) > 1
    destination = row["destination_hostname"] if by_name else row["DestinationIP"]
    key = f"{row['SourceIP']}|{destination}|{row['DestinationPort']}|{row['Protocol']}"
    return key + "|long_connection" if row.get("kind") == "long_connection" else key


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def item_id(key: str) -> str:
    return str(uuid.uuid5(ITEM_NAMESPACE, key))


def watchlist_rows(enriched: pd.DataFrame) -> list[dict[str, str]]:
    """The watchlist's rows as neutralised cell text, keyed by COLUMNS (one row per pair).

    The same cells go into the CSV and into the watchlist items Sentinel stores over ARM.
    """
    frame = enriched.copy()
    if not frame.empty:
        frame["PairKey"] = frame.apply(pair_key, axis=1)
        frame["risk_score"] = frame["risk_score"].round(3)
        frame["score"] = frame["score"].round(3)
        frame["prevalence"] = frame["prevalence"].round(3)
        frame["median_interval_s"] = frame["median_interval_s"].round(1)
        if "destination_ips" in frame:
            frame["destination_ips"] = [
                "" if _is_missing(ips) else " ".join(ips) for ips in frame["destination_ips"]
            ]
        for column in ("first_seen", "last_seen"):
            frame[column] = pd.to_datetime(frame[column]).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        dict(zip(COLUMNS, (safe_cell(v) for v in record), strict=True))
        for record in frame.reindex(columns=COLUMNS).itertuples(index=False)
    ]


def csv_text(rows: list[dict[str, str]], columns: list[str]) -> str:
    """CSV with CRLF line ends and minimal quoting; cells must already be neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    writer.writerows([row.get(c, "") for c in columns] for row in rows)
    return out.getvalue()


def watchlist_csv(enriched: pd.DataFrame) -> str:
    """The CSV text for the watchlist (header only when there is nothing to report)."""
    return csv_text(watchlist_rows(enriched), COLUMNS)
