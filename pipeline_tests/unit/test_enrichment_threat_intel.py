"""Threat-intel indicator files (STIX 2.1 bundle, CSV) and matching against candidates."""

import datetime as dt
import json

import pandas as pd
import pytest

from pipeline.enrich.threat_intel import (
    INDICATOR_COLUMNS,
    ThreatIntelFileError,
    match_indicators,
    read_indicator_file,
)

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
IDENTITY = "identity--0b6a6a46-7b0c-4c61-8f3a-0c2d3e4f5a6b"


def indicator(pattern: str, **extra) -> dict:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{abs(hash(pattern)) % 10**12:012d}",
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z",
        **extra,
    }


def stix_bundle() -> str:
    objects = [
        {"type": "identity", "id": IDENTITY, "name": "ACME CERT", "identity_class": "organization"},
        indicator(
            "[ipv4-addr:value = '203.0.113.50']",
            confidence=90,
            description="Cobalt Strike team server",
            created_by_ref=IDENTITY,
        ),
        indicator("[ipv4-addr:value ISSUBSET '198.51.100.0/24']", confidence=40),
        indicator("[ipv6-addr:value ISSUBSET '2001:db8:bad::/48']", description="v6 C2 range"),
        indicator("[domain-name:value = 'Evil.Example']", confidence=70),
        indicator("[ipv4-addr:value = '192.0.2.200']", valid_until="2026-11-01T00:00:00Z"),
        indicator(
            "[ipv4-addr:value = '192.0.2.1'] OR [ipv4-addr:value = '192.0.2.2']",
            valid_until="2027-01-01T00:00:00Z",
        ),
        # Malformed or unsupported: counted, never fatal.
        indicator("[ipv4-addr:value = 'not-an-ip']"),
        indicator("[file:hashes.'SHA-256' = 'abc']"),
        indicator("[ipv4-addr:value = '192.0.2.3'] AND [network-traffic:dst_port = 443]"),
        indicator("[ipv4-addr:value = '192.0.2.4']", valid_until="someday"),
        {"type": "indicator", "id": "indicator--nopattern"},
        indicator("[ipv4-addr:value = '192.0.2.5']", revoked=True),
        {"type": "malware", "id": "malware--x", "name": "ignored"},
    ]
    return json.dumps({"type": "bundle", "id": "bundle--1", "objects": objects})


def test_stix_bundle_is_parsed_into_the_shared_schema():
    frame, report = read_indicator_file("lake/reference/indicators.json", stix_bundle(), NOW)
    assert tuple(frame.columns) == INDICATOR_COLUMNS
    assert str(frame["confidence"].dtype) == "Int64"
    assert str(frame["valid_until"].dtype) == "datetime64[ns, UTC]"
    rows = {r["indicator"]: r for r in frame.to_dict("records")}
    assert set(rows) == {
        "203.0.113.50",
        "198.51.100.0/24",
        "2001:db8:bad::/48",
        "evil.example",
        "192.0.2.1",
        "192.0.2.2",
    }
    assert rows["203.0.113.50"]["source"] == "ACME CERT"
    assert rows["203.0.113.50"]["confidence"] == 90
    assert rows["203.0.113.50"]["description"] == "Cobalt Strike team server"
    assert rows["198.51.100.0/24"]["indicator_type"] == "cidr"
    assert rows["evil.example"]["indicator_type"] == "domain"
    assert rows["198.51.100.0/24"]["source"] == "local file indicators.json"
    assert pd.isna(rows["2001:db8:bad::/48"]["confidence"])
    assert (report.expired, report.revoked) == (1, 1)
    assert (report.malformed, report.unsupported) == (3, 2)
    assert len(report.examples) == 5 and report.indicators == 6


def test_csv_file_with_bad_lines_keeps_the_good_ones():
    text = (
        "indicator,indicator_type,source,confidence,description,valid_until\n"
        "203.0.113.50,ip,Feed A,80,team server,\n"
        "10.0.0.0/8,cidr,Feed B,,internal test,2030-01-01T00:00:00Z\n"
        "bad.example,domain,Feed A,,phishing,\n"
        "not an ip,ip,Feed A,10,,\n"
        "192.0.2.9,ip,Feed A,150,,\n"
        "192.0.2.10,ip,Feed A,,,yesterday\n"
        "192.0.2.11,domain,Feed A,,,\n"
        "192.0.2.12,ip,Feed A,,,2020-01-01T00:00:00Z\n"
    )
    frame, report = read_indicator_file("x/indicators.csv", text, NOW)
    assert frame["indicator"].tolist() == ["203.0.113.50", "10.0.0.0/8", "bad.example"]
    assert frame["confidence"].tolist()[0] == 80
    assert (report.malformed, report.expired, report.indicators) == (4, 1, 3)


def test_unreadable_files_fail_with_what_to_fix():
    with pytest.raises(ThreatIntelFileError, match="not valid JSON"):
        read_indicator_file("a.json", "{oops", NOW)
    with pytest.raises(ThreatIntelFileError, match="'objects' list"):
        read_indicator_file("a.json", json.dumps({"type": "bundle"}), NOW)
    with pytest.raises(ThreatIntelFileError, match="'indicator' column"):
        read_indicator_file("a.csv", "ip,source\n1.2.3.4,x\n", NOW)


def test_matching_ip_cidr_ipv6_domain_and_expiry():
    local, _ = read_indicator_file("indicators.json", stix_bundle(), NOW)
    # A second source in the same schema (as Sentinel's will be), with one expired row.
    other = pd.DataFrame(
        {
            "indicator": ["203.0.113.50", "192.0.2.77"],
            "indicator_type": ["ip", "ip"],
            "source": ["Sentinel", "Sentinel"],
            "confidence": pd.array([60, 100], dtype="Int64"),
            "description": ["seen in an incident", "old"],
            "valid_until": pd.to_datetime([None, "2026-11-19T00:00:00Z"], utc=True),
        }
    )
    candidates = pd.DataFrame(
        {
            "DestinationIP": [
                "203.0.113.50",
                "198.51.100.77",
                "2001:db8:bad::1",
                "192.0.2.77",
                "192.0.2.250",
                "203.0.113.51",
            ],
            "destination_hostname": [None, None, None, None, "cdn.evil.example", "example"],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    result = match_indicators(candidates, [local, other, None], NOW)
    assert result.index.tolist() == candidates.index.tolist()
    assert result["ti_match"].tolist() == [True, True, True, False, True, False]
    first = result.loc[10]
    assert first["ti_indicator"] == "203.0.113.50" and first["ti_confidence"] == 90
    assert first["ti_source"] == "ACME CERT; Sentinel" and first["ti_matches"] == 2
    assert first["ti_description"] == "Cobalt Strike team server"
    assert result.loc[11, "ti_indicator"] == "198.51.100.0/24"
    assert result.loc[12, "ti_description"] == "v6 C2 range"
    assert result.loc[14, "ti_indicator"] == "evil.example"
    assert pd.isna(result.loc[13, "ti_source"]) and result.loc[13, "ti_matches"] == 0


def test_ip_only_candidates_and_no_indicators():
    candidates = pd.DataFrame({"DestinationIP": ["198.51.100.1"]})
    local, _ = read_indicator_file("indicators.json", stix_bundle(), NOW)
    assert match_indicators(candidates, [local], NOW)["ti_match"].tolist() == [True]
    nothing = match_indicators(candidates, [None], NOW)
    assert nothing["ti_match"].tolist() == [False]
    assert str(nothing["ti_confidence"].dtype) == "Int64"
