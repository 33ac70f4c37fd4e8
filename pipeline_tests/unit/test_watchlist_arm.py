"""Unit tests of the Sentinel watchlist publisher's pure parts (pipeline.publish.watchlist)
and its settings: item values and ids, the first upload's size budget, neutralisation in items,
how a day's values merge with an item's, the watchlist body. No network, no Spark."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import pandas as pd
import pytest

from pipeline.azure.arm import arm_scope
from pipeline.publish.incidents import incident_id, incident_properties, severity
from pipeline.publish.watchlist import (
    FIRST_REPORTED,
    ITEM_COLUMNS,
    LAST_REPORTED,
    RAW_CONTENT_BUDGET,
    WatchlistTarget,
    _merge,
    day_items,
    first_batch,
    watchlist_properties,
)
from pipeline.publish.watchlist_csv import (
    COLUMNS,
    FORMULA_PREFIXES,
    SEARCH_KEY,
    item_id,
    watchlist_rows,
)
from pipeline.settings import Settings, SettingsError, load_settings

DAY = dt.date(2026, 11, 20)
SERVICE_LIMIT = 3_800_000  # REFERENCE §4: rawContent < 3.8 MB


def enriched(rows: list[dict]) -> pd.DataFrame:
    base = {
        "SourceIP": "10.20.0.24",
        "DestinationIP": "203.0.113.50",
        "DestinationPort": 443,
        "Protocol": "TCP",
        "kind": "beacon",
        "risk_rank": 1,
        "risk_score": 0.9,
        "score": 0.95,
        "connections": 1694,
        "median_interval_s": 51.0,
        "prevalence": 0.025,
        "first_seen": pd.Timestamp("2026-11-17 10:00:00"),
        "last_seen": pd.Timestamp("2026-11-20 23:59:58"),
        "reasons": "interval 51 s ± 9%",
        "date": DAY.isoformat(),
    }
    return pd.DataFrame([{**base, **row} for row in rows])


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


# --- item values and ids -----------------------------------------------------------------------


def test_day_items_hold_the_watchlist_columns_and_the_report_dates():
    (item,) = day_items(watchlist_rows(enriched([{}])), DAY)
    assert list(item) == ITEM_COLUMNS
    assert [*COLUMNS, FIRST_REPORTED, LAST_REPORTED] == ITEM_COLUMNS
    assert item[SEARCH_KEY] == "10.20.0.24|203.0.113.50|443|TCP"
    assert item[FIRST_REPORTED] == item[LAST_REPORTED] == "2026-11-20"
    assert item["score"] == "0.95"


def test_one_item_per_pair_key_and_the_best_ranked_row_wins():
    rows = watchlist_rows(
        enriched(
            [{"risk_rank": 1, "score": 0.9}, {"risk_rank": 2, "score": 0.4}, {"Protocol": "UDP"}]
        )
    )
    items = day_items(rows, DAY)
    assert [i[SEARCH_KEY] for i in items] == [
        "10.20.0.24|203.0.113.50|443|TCP",
        "10.20.0.24|203.0.113.50|443|UDP",
    ]
    assert items[0]["score"] == "0.9"


def test_item_id_is_the_uuid5_of_the_pair_key():
    (item,) = day_items(watchlist_rows(enriched([{}])), DAY)
    namespace = uuid.UUID("6f1d6d5e-2b7c-4f7e-9d0a-5b1c3e9a7f21")
    assert item_id(item[SEARCH_KEY]) == str(
        uuid.uuid5(namespace, "10.20.0.24|203.0.113.50|443|TCP")
    )
    # The day does not enter the id: the same pair is the same item on every day.
    (later,) = day_items(watchlist_rows(enriched([{"score": 0.1}])), DAY + dt.timedelta(days=3))
    assert item_id(later[SEARCH_KEY]) == item_id(item[SEARCH_KEY])


def test_every_item_cell_is_neutralised():
    hostile = {
        "SourceIP": "@10.0.0.1",
        "DestinationIP": "=cmd|' /C calc'!A0",
        "Protocol": "+TCP",
        "kind": "-beacon",
        "reasons": '=HYPERLINK("http://x")',
        "date": "\tdate",
    }
    (item,) = day_items(watchlist_rows(enriched([hostile])), DAY)
    assert item["SourceIP"] == "'@10.0.0.1"
    assert item["reasons"] == '\'=HYPERLINK("http://x")'
    assert item[SEARCH_KEY] == "'@10.0.0.1|=cmd|' /C calc'!A0|443|+TCP"
    assert all(isinstance(v, str) for v in item.values())
    assert not any(v.startswith(FORMULA_PREFIXES) for v in item.values())


# --- the first upload's size ------------------------------------------------------------------


def test_first_batch_stays_under_the_service_limit_and_keeps_the_rest_for_puts():
    # 500 pairs of ~10 kB: about 5 MB, more than one rawContent may carry.
    frame = enriched(
        [{"SourceIP": f"10.0.{i // 250}.{i % 250}", "reasons": "r" * 10_000} for i in range(500)]
    )
    items = day_items(watchlist_rows(frame), DAY)
    raw, count = first_batch(items)
    size = len(raw.encode("utf-8"))
    assert size <= RAW_CONTENT_BUDGET < SERVICE_LIMIT
    assert 300 < count < 500
    parsed = parse(raw)
    assert parsed == items[:count]
    # One more row would not have fitted the budget.
    _, one_more = first_batch(items, size + len(items[count]["reasons"]) + 200)
    assert one_more == count + 1


def test_first_batch_counts_utf8_bytes_not_characters():
    items = day_items(
        watchlist_rows(
            enriched([{"SourceIP": f"10.0.0.{i}", "reasons": "東" * 1000} for i in range(5)])
        ),
        DAY,
    )
    header_bytes = len(first_batch([])[0].encode())
    raw, count = first_batch(items, header_bytes + 3 * 3_400)
    assert count == 3  # 1,000 characters, 3,000+ bytes each
    assert len(raw.encode()) <= header_bytes + 3 * 3_400


def test_first_batch_of_an_oversized_item_is_the_header_alone():
    items = day_items(watchlist_rows(enriched([{"reasons": "x" * 5000}])), DAY)
    raw, count = first_batch(items, 1000)
    assert count == 0 and parse(raw) == []
    assert raw.split("\r\n")[0].split(",") == ITEM_COLUMNS


def test_newlines_quotes_and_commas_survive_the_first_upload_csv():
    text = 'a "quoted", multi\r\nline\nreason in Zürich ✓'
    items = day_items(watchlist_rows(enriched([{"reasons": text}])), DAY)
    raw, count = first_batch(items)
    assert count == 1 and parse(raw)[0]["reasons"] == text


# --- merging a day into an item -----------------------------------------------------------------


def item(first: str, last: str, score: str = "0.9") -> dict[str, str]:
    (values,) = day_items(watchlist_rows(enriched([{}])), DAY)
    return {**values, "score": score, FIRST_REPORTED: first, LAST_REPORTED: last}


def test_a_later_day_replaces_the_values_and_keeps_the_first_report():
    (today,) = day_items(watchlist_rows(enriched([{"score": 0.5}])), DAY)
    merged = _merge(item("2026-11-01", "2026-11-19"), today, DAY)
    assert merged is not None
    assert (merged["score"], merged[FIRST_REPORTED], merged[LAST_REPORTED]) == (
        "0.5",
        "2026-11-01",
        "2026-11-20",
    )


def test_an_earlier_day_keeps_the_later_values():
    (today,) = day_items(watchlist_rows(enriched([{"score": 0.5}])), DAY)
    assert _merge(item("2026-11-01", "2026-11-25"), today, DAY) is None


def test_an_earlier_day_moves_only_the_first_report_back():
    (today,) = day_items(watchlist_rows(enriched([{"score": 0.5}])), DAY)
    merged = _merge(item("2026-11-22", "2026-11-25"), today, DAY)
    assert merged is not None
    assert (merged["score"], merged[FIRST_REPORTED], merged[LAST_REPORTED]) == (
        "0.9",
        "2026-11-20",
        "2026-11-25",
    )


def test_the_same_day_again_gives_the_same_values():
    (today,) = day_items(watchlist_rows(enriched([{}])), DAY)
    assert _merge(dict(today), today, DAY) == today


# --- the watchlist ------------------------------------------------------------------------------


def test_watchlist_properties_carry_the_required_fields():
    properties = watchlist_properties(30, "a,b\r\n")
    for name in ("displayName", "provider", "itemsSearchKey"):
        assert properties[name]
    assert properties["itemsSearchKey"] == SEARCH_KEY
    assert properties["contentType"] == "text/csv"
    assert properties["numberOfLinesToSkip"] == 0
    assert properties["defaultDuration"] == "P30D"
    assert properties["rawContent"] == "a,b\r\n"
    assert "rawContent" not in watchlist_properties(7, None)


def test_target_from_settings_builds_the_arm_url():
    settings = Settings(
        sentinel_subscription_id="0a1b2c3d-0000-1111-2222-333344445555",
        sentinel_resource_group="rg-sec",
        sentinel_workspace_name="sentinel-ws",
    )
    target = WatchlistTarget.from_settings(settings)
    assert target.url == (
        "https://management.azure.com/subscriptions/0a1b2c3d-0000-1111-2222-333344445555"
        "/resourceGroups/rg-sec/providers/Microsoft.OperationalInsights/workspaces/sentinel-ws"
        "/providers/Microsoft.SecurityInsights/watchlists/beaconing-candidates"
    )
    with pytest.raises(ValueError, match="not configured"):
        WatchlistTarget.from_settings(Settings())


@pytest.mark.parametrize(
    ("endpoint", "scope"),
    [
        ("https://management.azure.com", "https://management.azure.com/.default"),
        ("https://management.chinacloudapi.cn", "https://management.chinacloudapi.cn/.default"),
        ("https://management.usgovcloudapi.net", "https://management.usgovcloudapi.net/.default"),
        ("https://127.0.0.1:8443", "https://management.azure.com/.default"),
        ("https://arm-proxy.example.net", "https://management.azure.com/.default"),
    ],
)
def test_the_token_audience_follows_a_sovereign_cloud_endpoint(endpoint, scope):
    assert arm_scope(endpoint) == scope


# --- incidents --------------------------------------------------------------------------------


def test_incident_id_is_per_pair_and_day():
    key = "10.20.0.24|203.0.113.50|443|TCP"
    assert incident_id(key, DAY) == incident_id(key, DAY)
    assert uuid.UUID(incident_id(key, DAY)).version == 5
    assert incident_id(key, DAY) != incident_id(key, DAY + dt.timedelta(days=1))
    assert incident_id(key, DAY) != incident_id(key.replace("TCP", "UDP"), DAY)
    assert incident_id(key, DAY) != item_id(key)


@pytest.mark.parametrize(
    ("risk", "name"),
    [(1.0, "High"), (0.9, "High"), (0.89, "Medium"), (0.75, "Medium"), (0.2, "Low")],
)
def test_severity_follows_the_risk(risk, name):
    assert severity(risk) == name


def test_incident_properties_use_the_neutralised_cells():
    (row,) = watchlist_rows(enriched([{"SourceIP": "=1+1", "reasons": "@evil"}]))
    properties = incident_properties(row, 0.93, DAY, "beaconing-candidates")
    assert properties["title"] == "Possible C2 beaconing: '=1+1 → 203.0.113.50:443/TCP"
    assert (properties["severity"], properties["status"]) == ("High", "New")
    assert "'@evil" in properties["description"]
    assert properties["labels"] == [{"labelName": "beaconing", "labelType": "User"}]


# --- settings -----------------------------------------------------------------------------------

SENTINEL = {
    "SENTINEL_SUBSCRIPTION_ID": "0A1B2C3D-0000-1111-2222-333344445555",
    "SENTINEL_RESOURCE_GROUP": "rg-security",
    "SENTINEL_WORKSPACE_NAME": "sentinel-ws",
}


def test_sentinel_settings_default_to_the_local_csv_sink():
    settings = load_settings({})
    assert not settings.sentinel_configured
    assert settings.watchlist_alias == "beaconing-candidates"
    assert settings.sentinel_arm_endpoint == "https://management.azure.com"
    assert settings.watchlist_retention_days == 30


def test_all_three_sentinel_names_configure_the_publisher():
    settings = load_settings(SENTINEL)
    assert settings.sentinel_configured
    assert settings.sentinel_subscription_id == "0a1b2c3d-0000-1111-2222-333344445555"


@pytest.mark.parametrize("missing", sorted(SENTINEL))
def test_some_but_not_all_sentinel_names_are_refused(missing):
    env = {k: v for k, v in SENTINEL.items() if k != missing}
    with pytest.raises(SettingsError, match=f"{missing} must be set too"):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BEACON_WATCHLIST_ALIAS", "ab"),
        ("BEACON_WATCHLIST_ALIAS", "a" * 65),
        ("BEACON_WATCHLIST_ALIAS", "beacons/../x"),
        ("SENTINEL_ARM_ENDPOINT", "http://management.azure.com"),
        ("SENTINEL_ARM_ENDPOINT", "https://management.azure.com/subscriptions"),
        ("SENTINEL_SUBSCRIPTION_ID", "my-subscription"),
        ("SENTINEL_RESOURCE_GROUP", "rg/other"),
        ("SENTINEL_WORKSPACE_NAME", "ws"),
        ("BEACON_WATCHLIST_RETENTION_DAYS", "0"),
    ],
)
def test_bad_sentinel_values_are_refused_by_name(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({**SENTINEL, name: value})


def test_incidents_are_off_by_default_and_need_sentinel():
    assert load_settings({}).incident_min_risk is None
    assert load_settings({**SENTINEL, "BEACON_INCIDENT_MIN_RISK": "0.8"}).incident_min_risk == 0.8
    with pytest.raises(SettingsError, match=r"BEACON_INCIDENT_MIN_RISK .*needs"):
        load_settings({"BEACON_INCIDENT_MIN_RISK": "0.8"})
    with pytest.raises(SettingsError, match=r"BEACON_INCIDENT_MIN_RISK='1\.5'"):
        load_settings({**SENTINEL, "BEACON_INCIDENT_MIN_RISK": "1.5"})


@pytest.mark.parametrize("alias", ["abc", "a" * 64, "Beacons_2026-v1"])
def test_aliases_of_3_to_64_characters_are_accepted(alias):
    assert load_settings({"BEACON_WATCHLIST_ALIAS": alias}).watchlist_alias == alias
