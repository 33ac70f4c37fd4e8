"""GeoIP/ASN enrichment read through the real maxminddb reader from `.mmdb` files mmdb-writer
builds (IPv4 and IPv6 entries), and the settings that point at them."""

from pathlib import Path

import pandas as pd
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from pipeline.enrich.geoip import GEO_COLUMNS, GeoIP, GeoIPDatabaseError

CITY = {
    "203.0.113.0/24": ("NL", "Amsterdam", 52.37, 4.89),
    "2001:db8:1::/48": ("DE", "Falkenstein", 50.48, 12.37),
}
ASN = {
    "203.0.113.0/24": (14061, "DIGITALOCEAN-ASN"),
    "198.51.100.0/24": (64500, "EXAMPLE-ISP"),
    "192.0.2.0/24": (24940, "Hetzner Online GmbH"),
    "2001:db8:1::/48": (24940, "Hetzner Online GmbH"),
}


def write_city_db(path: Path, entries: dict = CITY) -> str:
    """A City database in GeoLite2's record layout."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City")
    for cidr, (country, city, lat, lon) in entries.items():
        writer.insert_network(
            IPSet([cidr]),
            {
                "country": {"iso_code": country, "names": {"en": country}},
                "city": {"names": {"en": city}},
                "location": {"latitude": lat, "longitude": lon},
            },
        )
    writer.to_db_file(str(path))
    return str(path)


def write_asn_db(path: Path, entries: dict = ASN) -> str:
    """An ASN database in GeoLite2-ASN's record layout."""
    writer = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN", int_type="u32"
    )
    for cidr, (number, org) in entries.items():
        writer.insert_network(
            IPSet([cidr]),
            {"autonomous_system_number": number, "autonomous_system_organization": org},
        )
    writer.to_db_file(str(path))
    return str(path)


def test_lookup_fills_every_column_for_ipv4_and_ipv6(tmp_path):
    city, asn = write_city_db(tmp_path / "city.mmdb"), write_asn_db(tmp_path / "asn.mmdb")
    addresses = pd.Series(["203.0.113.50", "2001:db8:1::7", "198.51.100.77", "10.1.2.3", "junk"])
    with GeoIP(city, asn) as geoip:
        frame = geoip.lookup(addresses)
    assert list(frame.columns) == list(GEO_COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "geo_country": "string",
        "geo_city": "string",
        "geo_latitude": "Float64",
        "geo_longitude": "Float64",
        "asn": "Int64",
        "as_org": "string",
        "hosting_provider": "boolean",
    }
    first = frame.iloc[0]
    assert (first["geo_country"], first["geo_city"], first["asn"]) == ("NL", "Amsterdam", 14061)
    assert first["geo_latitude"] == pytest.approx(52.37)
    assert bool(first["hosting_provider"]) is True  # DigitalOcean
    v6 = frame.iloc[1]
    assert (v6["geo_country"], v6["asn"], v6["as_org"]) == ("DE", 24940, "Hetzner Online GmbH")
    isp = frame.iloc[2]
    assert pd.isna(isp["geo_country"]) and isp["asn"] == 64500
    assert bool(isp["hosting_provider"]) is False
    # Private and unparsable addresses: nothing known, but the ASN db was asked, so False.
    assert frame.iloc[3:]["asn"].isna().all()
    assert frame.iloc[3:]["hosting_provider"].tolist() == [False, False]


def test_without_databases_columns_stay_unknown_not_false():
    with GeoIP(None, None) as geoip:
        frame = geoip.lookup(pd.Series(["203.0.113.50"]))
        assert not geoip.has_city and not geoip.has_asn
        assert geoip.asns_of(["203.0.113.50"]) == set()
    assert frame.isna().all(axis=None)
    assert str(frame["hosting_provider"].dtype) == "boolean"


def test_asns_of_many_addresses(tmp_path):
    with GeoIP(None, write_asn_db(tmp_path / "asn.mmdb")) as geoip:
        assert geoip.asns_of(["203.0.113.1", "192.0.2.9", "2001:db8:1::1", "10.0.0.1"]) == {
            14061,
            24940,
        }


def test_missing_or_corrupt_database_names_the_setting(tmp_path):
    with pytest.raises(GeoIPDatabaseError, match=r"BEACON_GEOIP_CITY_DB=.*file not found"):
        GeoIP(str(tmp_path / "nope.mmdb"), None)
    corrupt = tmp_path / "bad.mmdb"
    corrupt.write_bytes(b"this is not a maxmind database")
    with pytest.raises(GeoIPDatabaseError, match=r"BEACON_GEOIP_ASN_DB=.*not a readable MaxMind"):
        GeoIP(None, str(corrupt))
