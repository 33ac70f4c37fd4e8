"""GeoIP and ASN: where a beacon destination is and which network operator answers it.

Read from MaxMind-format databases (GeoLite2/GeoIP2 City and ASN, or any `.mmdb` with the same
record layout) through the `maxminddb` reader; paths come from BEACON_GEOIP_CITY_DB and
BEACON_GEOIP_ASN_DB. Either may be unset: its columns stay empty and the run says so.

Hosting providers: a small curated set of ASNs of clouds and VPS hosts (`HOSTING_ASNS`).
Attackers rent command-and-control servers there by the hour, so a beacon to one is more
suspicious than one to an ISP, a CDN or the organisation's own SaaS vendors. The list is
deliberately short and easy to review; it is not a complete hosting-ASN database.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import Any

import maxminddb
import pandas as pd

# Clouds and VPS hosts where C2 servers are commonly rented (see module docstring).
HOSTING_ASNS: dict[int, str] = {
    16509: "Amazon AWS",
    14618: "Amazon AWS",
    8075: "Microsoft Azure",
    396982: "Google Cloud",
    15169: "Google",
    14061: "DigitalOcean",
    16276: "OVH",
    24940: "Hetzner",
    63949: "Akamai Linode",
    20473: "Vultr (Choopa)",
    9009: "M247",
    45102: "Alibaba Cloud",
    31898: "Oracle Cloud",
    36352: "ColoCrossing",
    51167: "Contabo",
    12876: "Scaleway",
}
# Columns added to enriched_beacons, with the dtype each has even on an empty day.
GEO_COLUMNS: dict[str, str] = {
    "geo_country": "string",
    "geo_city": "string",
    "geo_latitude": "Float64",
    "geo_longitude": "Float64",
    "asn": "Int64",
    "as_org": "string",
    "hosting_provider": "boolean",
}


class GeoIPDatabaseError(ValueError):
    """A configured GeoIP database cannot be opened; the message names the setting to fix."""


def _open(path: str | None, setting: str) -> maxminddb.Reader | None:
    if not path:
        return None
    if not os.path.isfile(path):
        raise GeoIPDatabaseError(
            f"{setting}={path!r}: file not found; point it at a MaxMind .mmdb file on this "
            "machine, or leave it empty to run without it"
        )
    try:
        return maxminddb.open_database(path)
    except (maxminddb.InvalidDatabaseError, OSError, ValueError) as error:
        raise GeoIPDatabaseError(
            f"{setting}={path!r}: not a readable MaxMind database ({error})"
        ) from error


class GeoIP:
    """Open City and ASN readers; `lookup` turns destination IPs into the geo columns."""

    def __init__(self, city_db: str | None, asn_db: str | None) -> None:
        self.city_db, self.asn_db = city_db, asn_db
        self._city = _open(city_db, "BEACON_GEOIP_CITY_DB")
        self._asn = _open(asn_db, "BEACON_GEOIP_ASN_DB")

    def close(self) -> None:
        for reader in (self._city, self._asn):
            if reader is not None:
                reader.close()

    def __enter__(self) -> GeoIP:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def has_city(self) -> bool:
        return self._city is not None

    @property
    def has_asn(self) -> bool:
        return self._asn is not None

    def asn_of(self, address: str) -> int | None:
        record = _get(self._asn, address)
        number = record.get("autonomous_system_number")
        return int(number) if isinstance(number, int) else None

    def asns_of(self, addresses: Iterable[str]) -> set[int]:
        """The distinct ASNs of many addresses (the window's destinations, for `new_asn`)."""
        if self._asn is None:
            return set()
        found = (self.asn_of(a) for a in addresses)
        return {n for n in found if n is not None}

    def lookup(self, addresses: pd.Series) -> pd.DataFrame:
        """One row of geo columns per address, aligned with its index; unknown → <NA>."""
        cache: dict[str, dict[str, Any]] = {}
        rows = []
        for address in addresses.astype(str):
            if address not in cache:
                cache[address] = self._one(address)
            rows.append(cache[address])
        frame = pd.DataFrame.from_records(rows, index=addresses.index, columns=list(GEO_COLUMNS))
        return typed(frame, GEO_COLUMNS)

    def _one(self, address: str) -> dict[str, Any]:
        city = _get(self._city, address)
        location = city.get("location") or {}
        asn_record = _get(self._asn, address)
        asn = asn_record.get("autonomous_system_number")
        asn = int(asn) if isinstance(asn, int) else None
        return {
            "geo_country": (city.get("country") or city.get("registered_country") or {}).get(
                "iso_code"
            ),
            "geo_city": ((city.get("city") or {}).get("names") or {}).get("en"),
            "geo_latitude": location.get("latitude"),
            "geo_longitude": location.get("longitude"),
            "asn": asn,
            "as_org": asn_record.get("autonomous_system_organization"),
            # Unknown without an ASN database: <NA>, not False, so nobody reads it as "checked".
            "hosting_provider": (asn in HOSTING_ASNS) if self._asn is not None else None,
        }


def _get(reader: maxminddb.Reader | None, address: str) -> dict[str, Any]:
    if reader is None:
        return {}
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return {}
    try:
        record = reader.get(ip)
    except ValueError:  # An IPv6 address in an IPv4-only database.
        return {}
    return record if isinstance(record, dict) else {}


def typed(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """Give each column its declared dtype, so an empty day writes the same parquet schema."""
    out = frame.copy()
    for column, dtype in dtypes.items():
        values = out[column] if column in out else pd.Series(pd.NA, index=out.index)
        values = values.astype(object).where(values.notna(), None)
        out[column] = pd.array(values.tolist(), dtype=dtype)
    return out
