"""CIDR membership as a Spark expression, against Python's ipaddress on many addresses."""

from __future__ import annotations

import ipaddress
import random

from pyspark.sql import functions as F

from pipeline.detect.networks import ipv6_hex, is_in_networks


def _addresses(rng: random.Random, networks: list[ipaddress._BaseNetwork]) -> list[str]:
    """Addresses inside, at the edges of and just outside each network, written as the export
    would (compressed, exploded, with an IPv4 tail), plus random ones of both families."""
    out: list[str] = []
    for net in networks:
        first, last = int(net.network_address), int(net.broadcast_address)
        top = 2**net.max_prefixlen - 1
        for value in (first, last, max(first - 1, 0), min(last + 1, top), rng.randint(first, last)):
            address = (
                ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value)
            )
            out.append(str(address))
            if address.version == 6:
                out.append(address.exploded)
    for _ in range(200):
        out.append(str(ipaddress.IPv6Address(rng.getrandbits(128))))
        out.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
    out += ["::", "::1", "::ffff:192.0.2.7", "64:ff9b::198.51.100.1", "2001:db8::", "fe80::1"]
    return [a.lower() for a in out]


def test_ipv4_and_ipv6_cidrs_match_what_ipaddress_says(spark):
    rng = random.Random(7)
    cidrs = ["10.0.0.0/8", "192.0.2.0/24", "198.51.100.7/32", "0.0.0.0/1"]
    cidrs += ["2001:db8::/32", "2001:db8:abcd:12::/63", "64:ff9b::/96", "::ffff:0:0/96"]
    cidrs += ["2001:db8::1/128", "fd00::/9", "::/0"]
    for _ in range(12):
        prefix = rng.randint(1, 127)
        cidrs.append(str(ipaddress.IPv6Network((rng.getrandbits(128), prefix), strict=False)))
    networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    addresses = _addresses(rng, networks)
    frame = spark.createDataFrame([(a,) for a in addresses], "address string")
    rows = frame.select(
        "address",
        ipv6_hex(F.col("address")).alias("hex"),
        *[is_in_networks(F.col("address"), (c,)).alias(f"n{i}") for i, c in enumerate(cidrs)],
    ).collect()

    wrong = []
    for row in rows:
        address = ipaddress.ip_address(row["address"])
        if address.version == 6:
            assert row["hex"] == f"{int(address):032x}", row["address"]
        else:
            assert row["hex"] is None
        for i, net in enumerate(networks):
            expected = address.version == net.version and address in net
            if row[f"n{i}"] != expected:
                wrong.append((row["address"], cidrs[i], row[f"n{i}"]))
    assert not wrong, wrong[:10]
    # Both answers occur for the IPv6 networks: the comparison above could have failed.
    inside = sum(row[f"n{cidrs.index('2001:db8::/32')}"] for row in rows)
    assert 0 < inside < len(rows)
