"""Sentinel threat-intel fetch against the fake Log Analytics server (both indicator tables),
through the real azure-monitor-query client and DefaultAzureCredential (stub `az`)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from pipeline.azure.credentials import AzureAccessError
from pipeline.enrich import sentinel_indicators
from pipeline.enrich.sentinel_indicators import COLUMNS, LEGACY_TABLE, STIX_TABLE
from pipeline.settings import Settings
from pipeline_tests.fakes.az_cli import token_for
from pipeline_tests.fakes.log_analytics import (
    THREAT_INTEL_INDICATORS_COLUMNS,
    THREAT_INTELLIGENCE_INDICATOR_COLUMNS,
    FakeLogAnalytics,
    running_log_analytics,
)

# Each test gets the identity of its own stub `az` (the credential is cached per process).
pytestmark = pytest.mark.usefixtures("fresh_credential")

WORKSPACE_ID = "0a1b2c3d-0000-1111-2222-333344445555"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=30)


def ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def legacy(indicator_id: str, when: dt.datetime, **values) -> dict:
    row = {
        "TimeGenerated": when,
        "IndicatorId": indicator_id,
        "Active": True,
        "SourceSystem": "Microsoft Defender Threat Intelligence",
        "ThreatType": "C2",
        "ExpirationDateTime": LATER,
        "Type": LEGACY_TABLE,
    }
    row.update(values)
    return row


def stix(indicator_id: str, when: dt.datetime, key: str, value: str, **values) -> dict:
    row = {
        "TimeGenerated": when,
        "Id": indicator_id,
        "ObservableKey": key,
        "ObservableValue": value,
        "IsActive": True,
        "IsDeleted": False,
        "SourceSystem": "TAXII feed",
        "Type": STIX_TABLE,
    }
    row.update(values)
    return row


LEGACY_ROWS = [
    # Two versions of one indicator: the latest counts.
    legacy("a", ago(5), NetworkIP="198.51.100.7", ConfidenceScore=50.0, Description="old"),
    legacy("a", ago(1), NetworkIP="198.51.100.7", ConfidenceScore=90.0, Description="CS C2"),
    legacy("b", ago(2), DomainName="Evil.Example.COM.", ConfidenceScore=70.4, Description=None),
    # Deactivated in its latest version.
    legacy("c", ago(4), NetworkIP="198.51.100.8", ConfidenceScore=60.0),
    legacy("c", ago(1), NetworkIP="198.51.100.8", ConfidenceScore=60.0, Active=False),
    # Already expired.
    legacy("d", ago(2), NetworkDestinationIP="198.51.100.9", ExpirationDateTime=ago(1)),
    legacy("e", ago(3), NetworkIP="203.0.113.0/24", ConfidenceScore=None, ExpirationDateTime=None),
    legacy("f", ago(3), Url="http://192.0.2.44/payload.bin", ConfidenceScore=100.0),
    # A URL on a named host: the domain is not flagged.
    legacy("g", ago(3), Url="https://drive.example.com/file/123", ConfidenceScore=80.0),
    # Outside the 14-day look-back.
    legacy("h", ago(30), NetworkIP="198.51.100.10", ConfidenceScore=99.0),
]
STIX_ROWS = [
    stix(
        "s1",
        ago(1),
        "ipv4-addr:value",
        "203.0.113.9",
        Confidence=80,
        Data={"description": "Sliver C2", "valid_until": "2026-12-31T00:00:00Z"},
        ValidUntil=None,
    ),
    stix("s2", ago(3), "domain-name:value", "bad.example.org", Confidence=40),
    stix("s2", ago(1), "domain-name:value", "bad.example.org", Confidence=40, IsActive=False),
    stix("s3", ago(1), "file:hashes.'SHA-256'", "ab" * 32, Confidence=90),
    stix("s4", ago(2), "ipv6-addr:value", "2001:DB8::1", Confidence=None, ValidUntil=LATER),
]


def workspace(legacy_rows=LEGACY_ROWS, stix_rows=STIX_ROWS) -> FakeLogAnalytics:
    fake = FakeLogAnalytics(WORKSPACE_ID)
    if legacy_rows is not None:
        fake.add_table(LEGACY_TABLE, THREAT_INTELLIGENCE_INDICATOR_COLUMNS, legacy_rows)
    if stix_rows is not None:
        fake.add_table(STIX_TABLE, THREAT_INTEL_INDICATORS_COLUMNS, stix_rows)
    return fake


def fetch(test_ca, fake: FakeLogAnalytics, **overrides) -> pd.DataFrame | None:
    with running_log_analytics(test_ca, fake) as url:
        fake.expected_token = token_for(url)
        settings = Settings(
            log_analytics_workspace_id=WORKSPACE_ID, log_analytics_endpoint=url, **overrides
        )
        return sentinel_indicators.fetch_indicators(settings, now=NOW)


def assert_schema(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns) == COLUMNS
    assert str(frame["confidence"].dtype) == "Int64"
    assert str(frame["valid_until"].dtype) == "datetime64[ns, UTC]"
    for column in ("indicator", "indicator_type", "source", "description"):
        assert frame[column].map(type).eq(str).all(), column


def test_both_tables_become_one_indicator_frame(az_cli, test_ca):
    frame = fetch(test_ca, workspace())
    assert_schema(frame)
    legacy_source = f"Sentinel {LEGACY_TABLE}: Microsoft Defender Threat Intelligence"
    stix_source = f"Sentinel {STIX_TABLE}: TAXII feed"
    rows = {
        (r.indicator, r.indicator_type): (
            r.source,
            None if pd.isna(r.confidence) else int(r.confidence),
            r.description,
            None if pd.isna(r.valid_until) else r.valid_until.isoformat(),
        )
        for r in frame.itertuples()
    }
    assert rows == {
        ("198.51.100.7", "ip"): (legacy_source, 90, "CS C2", LATER.isoformat()),
        ("evil.example.com", "domain"): (legacy_source, 70, "C2", LATER.isoformat()),
        ("203.0.113.0/24", "cidr"): (legacy_source, None, "C2", None),
        ("192.0.2.44", "ip"): (legacy_source, 100, "C2", LATER.isoformat()),
        ("203.0.113.9", "ip"): (stix_source, 80, "Sliver C2", "2026-12-31T00:00:00+00:00"),
        ("2001:db8::1", "ip"): (stix_source, None, "", LATER.isoformat()),
    }
    report = frame.attrs["sentinel_sources"]
    assert report[LEGACY_TABLE]["status"] == "ok"
    assert report[LEGACY_TABLE]["expired"] == 1
    assert report[LEGACY_TABLE]["skipped_observables"] == 1  # the drive.example.com URL
    assert report[STIX_TABLE]["skipped_observables"] == 1  # the file hash
    assert report[STIX_TABLE]["indicators"] == 2


def test_queries_take_the_latest_active_version_over_the_last_14_days(az_cli, test_ca):
    fake = workspace()
    fetch(test_ca, fake)
    queries = {r.query.split(" ", 1)[0]: r for r in fake.requests}
    assert "arg_max(TimeGenerated, *) by IndicatorId" in queries[LEGACY_TABLE].query
    assert "where Active == true" in queries[LEGACY_TABLE].query
    assert "arg_max(TimeGenerated, *) by Id " in queries[STIX_TABLE].query
    assert "where IsActive == true" in queries[STIX_TABLE].query
    start, end = (dt.datetime.fromisoformat(t) for t in queries[LEGACY_TABLE].timespan.split("/"))
    assert (start, end) == (NOW - dt.timedelta(days=14), NOW)


def test_a_missing_table_is_an_empty_source_not_an_error(az_cli, test_ca):
    frame = fetch(test_ca, workspace(stix_rows=None))
    assert_schema(frame)
    assert set(frame["source"].str.split(":").str[0]) == {f"Sentinel {LEGACY_TABLE}"}
    assert frame.attrs["sentinel_sources"][STIX_TABLE] == {
        "status": "table not found",
        "rows": 0,
        "indicators": 0,
    }


def test_no_indicator_table_at_all_gives_an_empty_frame(az_cli, test_ca):
    frame = fetch(test_ca, workspace(legacy_rows=None, stix_rows=None))
    assert_schema(frame)
    assert frame.empty
    statuses = {t: r["status"] for t, r in frame.attrs["sentinel_sources"].items()}
    assert statuses == {LEGACY_TABLE: "table not found", STIX_TABLE: "table not found"}


def test_without_a_workspace_there_is_nothing_to_fetch(test_ca):
    fake = workspace()
    with running_log_analytics(test_ca, fake) as url:
        settings = Settings(log_analytics_endpoint=url)
        assert sentinel_indicators.fetch_indicators(settings, now=NOW) is None
    assert fake.requests == []


def test_an_identity_without_access_is_an_error_not_an_empty_source(az_cli, test_ca):
    fake = workspace()
    with running_log_analytics(test_ca, fake) as url:
        fake.expected_token = token_for("https://api.loganalytics.io")  # another audience
        settings = Settings(log_analytics_workspace_id=WORKSPACE_ID, log_analytics_endpoint=url)
        with pytest.raises(AzureAccessError, match="Log Analytics Reader"):
            sentinel_indicators.fetch_indicators(settings, now=NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.1", ("10.0.0.1", "ip")),
        (" 192.0.2.0/24 ", ("192.0.2.0/24", "cidr")),
        ("192.0.2.7/32", ("192.0.2.7", "ip")),
        ("2001:DB8::/32", ("2001:db8::/32", "cidr")),
        ("Sub.Example.ORG.", ("sub.example.org", "domain")),
        ("not a domain", None),
        ("", None),
        (None, None),
    ],
)
def test_classify(value, expected):
    assert sentinel_indicators.classify(value) == expected


def test_sentinel_indicators_reach_the_enriched_beacons(az_cli, test_ca, tmp_path):
    """The enrichment step asks Sentinel for its indicators and ranks the matched pair first."""
    from pipeline.enrich.enrich import enrich_days

    candidates = pd.DataFrame(
        [
            {
                "SourceIP": "10.0.0.5",
                "DestinationIP": ip,
                "DestinationPort": 443,
                "Protocol": "TCP",
                "destination_hostname": None,
                "kind": "beacon",
                "score": score,
                "prevalence": 0.02,
                "internal_sources_to_destination": 1,
                "first_seen_age_days": 10,
                "connections": 500,
                "new_destination": False,
            }
            for ip, score in (("192.0.2.80", 0.95), ("198.51.100.7", 0.75))
        ]
    )
    fake = workspace()
    with running_log_analytics(test_ca, fake) as url:
        fake.expected_token = token_for(url)
        settings = Settings(
            lake_url=str(tmp_path / "lake"),
            log_analytics_workspace_id=WORKSPACE_ID,
            log_analytics_endpoint=url,
        )
        enriched = enrich_days(
            settings,
            {NOW.date(): candidates},
            now=NOW,
            sentinel_indicators=sentinel_indicators.fetch_indicators,
        )
    day = enriched.days[NOW.date()]
    matched = day[day["ti_match"]]
    assert list(matched["DestinationIP"]) == ["198.51.100.7"]
    assert matched["ti_source"].iloc[0].startswith(f"Sentinel {LEGACY_TABLE}")
    assert int(matched["ti_confidence"].iloc[0]) == 90
    # The weaker timer with a confident Sentinel match outranks the stronger unmatched one.
    assert day.sort_values("risk_rank")["DestinationIP"].iloc[0] == "198.51.100.7"
    assert enriched.sources["threat_intel_sentinel"]["indicators"] >= 1
