"""enriched_beacons through real Dagster and local Spark on the sample lake, with a GeoIP/ASN
database built by mmdb-writer and a STIX indicator file in the lake: columns, types, rank."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from pipeline.enrich.enrich import empty_enriched, enrich_days
from pipeline.ingest.sample import BEACONS, SampleNetwork
from pipeline.lake import Lake
from pipeline.lake.schemas import BEACONING_CANDIDATES
from pipeline_tests.integration.test_chain import FIRST, LAST, RANGE_TAGS, materialize, settings_for

COBALT, SLIVER, EMPIRE = (b.destination for b in BEACONS)  # 203.0.113.50, 198.51.100.77, …


def write_mmdb(path, kind: str, records: dict[str, dict]) -> str:
    writer = MMDBWriter(ip_version=6, database_type=kind, ipv4_compatible=True)
    for cidr, record in records.items():
        writer.insert_network(IPSet([cidr]), record)
    writer.to_db_file(str(path))
    return str(path)


def stix_bundle() -> dict:
    def indicator(n: int, pattern: str, **extra) -> dict:
        return {
            "type": "indicator",
            "spec_version": "2.1",
            "id": f"indicator--00000000-0000-4000-8000-00000000000{n}",
            "pattern": pattern,
            "pattern_type": "stix",
            **extra,
        }

    return {
        "type": "bundle",
        "id": "bundle--00000000-0000-4000-8000-000000000000",
        "objects": [
            {"type": "identity", "id": "identity--cert", "name": "Partner CERT"},
            indicator(
                1,
                f"[ipv4-addr:value = '{SLIVER}']",
                confidence=95,
                description="Sliver C2 server",
                created_by_ref="identity--cert",
            ),
            # Expired: the cobalt destination must not match through it.
            indicator(2, f"[ipv4-addr:value = '{COBALT}']", valid_until="2020-01-01T00:00:00Z"),
            indicator(3, "[ipv4-addr:value = 'not an address']"),  # malformed, counted
            indicator(4, "[url:value = 'http://x.example/a']"),  # unsupported, counted
        ],
    }


@pytest.fixture(scope="module")
def enriched_chain(tmp_path_factory, spark):
    tmp_path = tmp_path_factory.mktemp("enriched")
    city = write_mmdb(
        tmp_path / "city.mmdb",
        "GeoLite2-City",
        {
            "203.0.113.0/24": {
                "country": {"iso_code": "NL"},
                "city": {"names": {"en": "Amsterdam"}},
                "location": {"latitude": 52.37, "longitude": 4.89},
            },
            "198.51.100.0/24": {"country": {"iso_code": "US"}},
        },
    )
    asn = write_mmdb(
        tmp_path / "asn.mmdb",
        "GeoLite2-ASN",
        {
            "203.0.113.0/24": {
                "autonomous_system_number": 14061,
                "autonomous_system_organization": "DIGITALOCEAN-ASN",
            },
            "198.51.100.0/24": {
                "autonomous_system_number": 64500,
                "autonomous_system_organization": "EXAMPLE-ISP",
            },
        },
    )
    settings = settings_for(tmp_path, min_window_coverage=0.1, geoip_city_db=city, geoip_asn_db=asn)
    reference = tmp_path / "lake" / "reference"
    reference.mkdir(parents=True)
    (reference / "indicators.json").write_text(json.dumps(stix_bundle()))
    result = materialize(settings, tags=RANGE_TAGS)
    return settings, result


def enriched_day(settings, day: dt.date) -> pd.DataFrame:
    return pd.read_parquet(Lake(settings.lake_url).day_url("enriched_beacons", day))


def test_enriched_rows_carry_geoip_asn_and_threat_intel(enriched_chain):
    settings, result = enriched_chain
    assert result.success
    frame = enriched_day(settings, LAST)
    by_destination = {r["DestinationIP"]: r for r in frame.to_dict("records")}
    sliver, cobalt = by_destination[SLIVER], by_destination[COBALT]
    assert bool(sliver["ti_match"]) is True
    assert sliver["ti_source"] == "Partner CERT"
    assert sliver["ti_confidence"] == 95
    assert sliver["ti_description"] == "Sliver C2 server"
    assert (sliver["geo_country"], sliver["asn"], sliver["as_org"]) == ("US", 64500, "EXAMPLE-ISP")
    assert bool(sliver["hosting_provider"]) is False
    assert bool(cobalt["ti_match"]) is False  # its only indicator expired
    assert (cobalt["geo_country"], cobalt["geo_city"]) == ("NL", "Amsterdam")
    assert cobalt["geo_latitude"] == pytest.approx(52.37)
    assert (cobalt["asn"], bool(cobalt["hosting_provider"])) == (14061, True)
    # RDAP is off by default: the column says so instead of staying silently empty.
    assert set(frame["whois_status"]) == {"off"}


def test_rank_order_puts_the_known_c2_first_and_is_sorted(enriched_chain):
    settings, _ = enriched_chain
    frame = enriched_day(settings, LAST)
    assert frame.loc[0, "DestinationIP"] == SLIVER
    assert list(frame["risk_rank"]) == list(range(1, len(frame) + 1))
    assert frame["risk_score"].is_monotonic_decreasing
    network = SampleNetwork()
    cobalt_source = network.host_ip(BEACONS[0].host)
    cobalt = frame[(frame["SourceIP"] == cobalt_source) & (frame["DestinationIP"] == COBALT)]
    plain = cobalt["score"].iloc[0] * (1 - cobalt["prevalence"].iloc[0] / 2)
    # The hosting provider bonus lifted the cobalt pair above its plain beacon score.
    assert cobalt["risk_score"].iloc[0] > plain


def test_every_day_has_the_enrichment_columns_with_fixed_types(enriched_chain):
    settings, _ = enriched_chain
    expected = {
        "geo_country": "string",
        "geo_latitude": "double",
        "asn": "int64",
        "hosting_provider": "bool",
        "new_asn": "bool",
        "whois_status": "string",
        "ti_match": "bool",
        "ti_confidence": "int64",
        "ti_source": "string",
        "risk_rank": "int64",
    }
    for offset in range((LAST - FIRST).days + 1):
        day = FIRST + dt.timedelta(days=offset)
        schema = pq.read_schema(
            f"{Lake(settings.lake_url).day_url('enriched_beacons', day)}/part-0.parquet"
        )
        types = {name: str(schema.field(name).type) for name in expected}
        assert types == expected, day


def test_metadata_reports_each_source(enriched_chain):
    _, result = enriched_chain
    materialization = next(iter(result.asset_materializations_for_node("enriched_beacons")))
    sources = materialization.metadata["enrichment_sources"].value
    local = sources["threat_intel_file"]
    assert local["indicators"] == 1
    assert local["expired"] == 1
    assert local["malformed"] == 1
    assert local["unsupported"] == 1
    assert sources["threat_intel_matches"] >= 1
    assert "configured" in json.dumps(sources["geoip_city"])
    assert "off" in json.dumps(sources["rdap"])


def test_an_empty_day_would_write_the_same_schema(enriched_chain):
    settings, _ = enriched_chain
    written = pq.read_schema(
        f"{Lake(settings.lake_url).day_url('enriched_beacons', LAST)}/part-0.parquet"
    )
    empty_day = dt.date(2000, 1, 1)
    Lake(settings.lake_url).write_day_file(
        "enriched_beacons", empty_day, "part-0.parquet", empty_enriched()
    )
    empty_url = Lake(settings.lake_url).day_url("enriched_beacons", empty_day)
    empty = pq.read_schema(f"{empty_url}/part-0.parquet")
    # pandas reads it back (an Arrow list dtype in its metadata once made the file unreadable).
    assert pd.read_parquet(empty_url).empty
    differing = {
        name: (str(written.field(name).type), str(empty.field(name).type))
        for name in written.names
        if name not in empty.names or written.field(name).type != empty.field(name).type
    }
    assert differing == {}
    assert set(empty.names) == set(written.names)


def test_a_destination_most_hosts_reach_is_reported_only_when_new_or_named_by_threat_intel(
    tmp_path,
):
    settings = settings_for(tmp_path)
    reference = tmp_path / "lake" / "reference"
    reference.mkdir(parents=True)
    (reference / "indicators.json").write_text(json.dumps(stix_bundle()))  # names SLIVER
    day = LAST
    columns = {f.name: None for f in BEACONING_CANDIDATES.fields}

    def candidate(destination: str, prevalence: float, new: bool, population: int = 40) -> dict:
        return {
            **columns,
            "SourceIP": "10.0.0.5",
            "DestinationIP": destination,
            "DestinationPort": 443,
            "Protocol": "TCP",
            "kind": "beacon",
            "score": 0.9,
            "connections": 500,
            "prevalence": prevalence,
            "internal_sources_to_destination": round(prevalence * population),
            "internal_sources": population,
            "new_destination": new,
            "first_seen_age_days": 10,
            "reasons": "test",
            "date": day.isoformat(),
        }

    frame = pd.DataFrame(
        [
            candidate("192.0.2.10", 0.9, new=False),  # popular: held back
            candidate("192.0.2.11", 0.9, new=True),  # popular but new: reported
            candidate(SLIVER, 0.9, new=False),  # popular, named by threat intel: reported
            candidate("192.0.2.12", 0.5, new=False),  # half of the hosts exactly: reported
            # The one host of a capture reaches everything: not popularity, reported.
            candidate("192.0.2.13", 1.0, new=False, population=1),
        ]
    )
    enriched = enrich_days(settings, {day: frame}, now=dt.datetime.now(dt.UTC))
    reported = enriched.days[day]
    assert sorted(reported["DestinationIP"]) == sorted(
        ["192.0.2.11", SLIVER, "192.0.2.12", "192.0.2.13"]
    )
    held_back = enriched.sources["held_back_popular"]
    assert held_back["pairs_per_day"] == {day.isoformat(): 1}
