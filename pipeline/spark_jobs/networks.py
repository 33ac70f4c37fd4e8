"""Which addresses are internal, as a Spark column expression (no Python UDF on the hot path)."""

from __future__ import annotations

import ipaddress

from pyspark.sql import Column
from pyspark.sql import functions as F

# Never candidate destinations whatever the settings say: loopback, link-local, multicast,
# broadcast; IPv6 loopback, unique-local (fc00::/7), link-local (fe80::/10) and multicast (ff).
ALWAYS_INTERNAL_V4 = ("127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32")
INTERNAL_V6 = r"^(::1$|f[cd]|fe[89ab]|ff)"


def ipv4_number(column: Column) -> Column:
    """Dotted IPv4 → its 32-bit number; null for anything else (IPv6)."""

    # substring_index scans bytes; a regex split here was most of the cost of address checks
    # (the number is rebuilt for every network it is compared with).
    def octet(i: int) -> Column:
        return F.substring_index(F.substring_index(column, ".", i), ".", -1).cast("long")

    number = octet(1) * 16777216 + octet(2) * 65536 + octet(3) * 256 + octet(4)
    return F.when(~column.contains(":"), number)


def is_in_networks(column: Column, networks: tuple[str, ...]) -> Column:
    """IPv4 CIDRs by number range; IPv6 entries match their exact address only."""
    number = ipv4_number(column)
    condition = F.lit(False)
    for cidr in networks:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version == 6:
            condition = condition | (column == str(net.network_address))
        else:
            low, high = int(net.network_address), int(net.broadcast_address)
            condition = condition | number.between(low, high)
    return F.coalesce(condition, F.lit(False))


def is_internal(column: Column, networks: tuple[str, ...]) -> Column:
    inside = is_in_networks(column, (*networks, *ALWAYS_INTERNAL_V4))
    return F.coalesce(column.rlike(INTERNAL_V6) | inside, F.lit(False))
