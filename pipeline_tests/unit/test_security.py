"""Hostile configuration and hostile values: what settings let in, what the watchlist lets out."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.export_layout import day_folder, workspace_path
from pipeline.publish.watchlist_csv import COLUMNS, FORMULA_PREFIXES, watchlist_csv
from pipeline.settings import SettingsError, load_settings

SUB = "0a1b2c3d-0000-4000-8000-123456789abc"


def workspace_id(rg: str = "soc-rg", ws: str = "sentinel-ws", sub: str = SUB) -> str:
    return (
        f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
        f"Microsoft.OperationalInsights/workspaces/{ws}"
    )


# --- names against Azure's rules: nothing that could walk out of the export folder -------------


@pytest.mark.parametrize(
    "value",
    [
        workspace_id(),
        workspace_id(rg="SOC_RG.(prod)-1", ws="ws01"),
        workspace_id(rg="a", ws="a" * 63),
    ],
)
def test_azure_names_are_accepted(value):
    assert load_settings({"BEACON_WORKSPACE_RESOURCE_ID": value}).workspace_resource_id == (
        value.lower()
    )


@pytest.mark.parametrize(
    "value",
    [
        workspace_id(sub=".."),
        workspace_id(sub="*"),
        workspace_id(sub="0000-1111"),  # not a GUID
        workspace_id(rg=".."),
        workspace_id(rg="rg."),  # a resource group cannot end with a period
        workspace_id(rg="a/../b"),
        workspace_id(rg="*"),
        workspace_id(rg="r" * 91),
        workspace_id(ws=".."),
        workspace_id(ws="ws"),  # 4-63 characters
        workspace_id(ws="w" * 64),
        workspace_id(ws="-ws-"),
        workspace_id(ws="ws_1"),
        workspace_id(ws="wörk"),
        workspace_id(ws="ws\n1"),
        workspace_id() + "/../../other",
    ],
)
def test_names_outside_azures_rules_are_refused(value):
    with pytest.raises(SettingsError, match="BEACON_WORKSPACE_RESOURCE_ID"):
        load_settings({"BEACON_WORKSPACE_RESOURCE_ID": value})


SEGMENT = st.text(
    alphabet=st.sampled_from(list("abcAB019-_.()/*?[]~%\\ ")), min_size=0, max_size=12
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    sub=st.one_of(st.just(SUB), SEGMENT),
    rg=st.one_of(st.from_regex(r"[-a-zA-Z0-9_.()]{0,8}[-a-zA-Z0-9_()]", fullmatch=True), SEGMENT),
    ws=st.one_of(st.from_regex(r"[a-z0-9][a-z0-9-]{2,8}[a-z0-9]", fullmatch=True), SEGMENT),
)
def test_an_accepted_workspace_id_is_a_plain_folder_path(sub, rg, ws):
    value = workspace_id(sub=sub, rg=rg, ws=ws)
    try:
        accepted = load_settings({"BEACON_WORKSPACE_RESOURCE_ID": value}).workspace_resource_id
    except SettingsError:
        return
    folder = day_folder(workspace_path(accepted), pd.Timestamp("2026-01-01").date())
    parts = folder.split("/")
    assert ".." not in parts and "." not in parts
    assert not any(c in folder for c in "*?[]\\~% ")
    assert len(parts) == len(("WorkspaceResourceId=", *value.split("/")[1:], "y", "m", "d"))


@pytest.mark.parametrize("variable", ["BEACON_EXPORT_URL", "BEACON_LAKE_URL"])
@pytest.mark.parametrize(
    "value",
    [
        "http://attacker.example/lake",
        "ftp://host/x",
        "hdfs://namenode/x",
        "s3://bucket/x",
        "gs://bucket/x",
        "file:///data/../etc",
        "/data/lake/../../etc",
        "abfss://c@a.dfs.core.windows.net/../../x",
    ],
)
def test_lake_and_export_urls_allow_only_known_schemes_and_no_traversal(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


@pytest.mark.parametrize(
    "value", ["local[2]", "local[*,4]", "local[2,3]", "local", "yarn", "spark://h-1.x:7077"]
)
def test_spark_masters_that_are_accepted(value):
    assert load_settings({"BEACON_SPARK_MASTER": value}).spark_master == value


@pytest.mark.parametrize(
    "value",
    [
        "local[0]",
        "local[2,]",
        "spark://host",
        "local[2]; rm -rf /",
        "sc://host:15002/;token=x y",
        "http://host:7077",
        "",
    ],
)
def test_spark_masters_that_are_refused(value):
    with pytest.raises(SettingsError, match="BEACON_SPARK_MASTER"):
        load_settings({"BEACON_SPARK_MASTER": value})


@pytest.mark.parametrize("value", ["4g", "512m", "2048"])
def test_driver_memory_sizes(value):
    assert load_settings({"BEACON_SPARK_DRIVER_MEMORY": value}).spark_driver_memory == value


@pytest.mark.parametrize("value", ["", "0g", "4 g", "4gb", "-1g", "4g -Dx=y"])
def test_driver_memory_refuses_anything_else(value):
    with pytest.raises(SettingsError, match="BEACON_SPARK_DRIVER_MEMORY"):
        load_settings({"BEACON_SPARK_DRIVER_MEMORY": value})


# --- the watchlist CSV against formula injection ----------------------------------------------


def enriched_row(**overrides) -> dict:
    row = {
        "SourceIP": "10.0.0.1",
        "DestinationIP": "203.0.113.1",
        "DestinationPort": 443,
        "Protocol": "TCP",
        "kind": "beacon",
        "risk_rank": 1,
        "risk_score": 0.9,
        "score": 0.9,
        "connections": 100,
        "median_interval_s": 60.0,
        "prevalence": 0.0,
        "first_seen": "2026-01-01 00:00:00",
        "last_seen": "2026-01-02 00:00:00",
        "reasons": "r",
        "date": "2026-01-02",
    }
    row.update(overrides)
    return row


def cells(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.tuples(st.sampled_from(FORMULA_PREFIXES), st.text(max_size=20)).map("".join),
)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(source=HOSTILE_TEXT, destination=HOSTILE_TEXT, protocol=HOSTILE_TEXT, reasons=HOSTILE_TEXT)
def test_no_text_cell_of_the_watchlist_can_start_a_formula(source, destination, protocol, reasons):
    frame = pd.DataFrame(
        [
            enriched_row(
                SourceIP=source, DestinationIP=destination, Protocol=protocol, reasons=reasons
            )
        ]
    )
    (row,) = cells(watchlist_csv(frame))
    for column in ("SourceIP", "DestinationIP", "Protocol", "reasons", "PairKey"):
        assert not row[column].startswith(FORMULA_PREFIXES), column
    # Neutralising only prefixes a quote: the value itself is intact.
    assert row["reasons"] in (reasons, "'" + reasons) or "\r" in reasons


def test_negative_numbers_stay_numbers_in_the_watchlist():
    frame = pd.DataFrame([enriched_row(score=-0.5, connections=-1, reasons="-1+1")])
    (row,) = cells(watchlist_csv(frame))
    assert row["score"] == "-0.5" and float(row["score"]) == -0.5
    assert row["connections"] == "-1"
    assert row["reasons"] == "'-1+1"  # text that looks like arithmetic is still neutralised
    assert list(row) == COLUMNS
