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
    parts = F.split(column, r"\.")
    number = (
        parts.getItem(0).cast("long") * 16777216
        + parts.getItem(1).cast("long") * 65536
        + parts.getItem(2).cast("long") * 256
        + parts.getItem(3).cast("long")
    )
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
