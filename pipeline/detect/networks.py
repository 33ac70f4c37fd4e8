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


IPV4_TAIL = r"(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$"


def ipv6_hex(column: Column) -> Column:
    """Normalised (lower-case, valid) IPv6 text → its 32 hex digits; null for IPv4.

    `::` is expanded and every group padded to 4 digits, so a CIDR is a prefix of this text
    whatever form the address was written in; an IPv4 tail (`::ffff:1.2.3.4`) becomes two groups.
    """
    v4_tail = F.regexp_extract(column, IPV4_TAIL, 1)
    v4_hex = F.lpad(F.lower(F.hex(ipv4_number(v4_tail))), 8, "0")
    text = F.when(
        v4_tail != "",
        F.concat(
            F.regexp_replace(column, IPV4_TAIL, ""),
            F.substring(v4_hex, 1, 4),
            F.lit(":"),
            F.substring(v4_hex, 5, 4),
        ),
    ).otherwise(column)
    halves = F.split(text, "::")

    def groups(half: Column) -> Column:
        return F.filter(F.split(F.coalesce(half, F.lit("")), ":"), lambda g: g != "")

    head, tail = groups(halves.getItem(0)), groups(F.get(halves, 1))
    missing = F.greatest(F.lit(0), 8 - F.size(head) - F.size(tail))
    digits = F.concat(
        F.transform(head, lambda g: F.lpad(g, 4, "0")),
        F.array_repeat(F.lit("0000"), missing),
        F.transform(tail, lambda g: F.lpad(g, 4, "0")),
    )
    return F.when(column.contains(":"), F.array_join(digits, ""))


def _in_ipv6_network(hex_digits: Column, net: ipaddress.IPv6Network) -> Column:
    """Whether 32 hex digits fall in `net`: the whole hex digits of its prefix are equal, and the
    digit a prefix length that is not a multiple of 4 splits lies in the network's range."""
    network = f"{int(net.network_address):032x}"
    whole, bits = divmod(net.prefixlen, 4)
    # Null for IPv4: `::/0` must not match every address.
    condition = hex_digits.isNotNull()
    if whole:
        condition = condition & (F.substring(hex_digits, 1, whole) == network[:whole])
    if bits:
        low = int(network[whole], 16)
        high = low | (0xF >> bits)
        digit = F.conv(F.substring(hex_digits, whole + 1, 1), 16, 10).cast("int")
        condition = condition & digit.between(low, high)
    return condition


def is_in_networks(column: Column, networks: tuple[str, ...]) -> Column:
    """Whether the address is in one of the CIDRs: IPv4 by number range, IPv6 by hex prefix."""
    number = ipv4_number(column)
    parsed = [ipaddress.ip_network(cidr, strict=False) for cidr in networks]
    hex_digits = ipv6_hex(column) if any(n.version == 6 for n in parsed) else None
    condition = F.lit(False)
    for net in parsed:
        if isinstance(net, ipaddress.IPv6Network):
            condition = condition | _in_ipv6_network(hex_digits, net)
        else:
            low, high = int(net.network_address), int(net.broadcast_address)
            condition = condition | number.between(low, high)
    return F.coalesce(condition, F.lit(False))


def is_internal(column: Column, networks: tuple[str, ...]) -> Column:
    inside = is_in_networks(column, (*networks, *ALWAYS_INTERNAL_V4))
    return F.coalesce(column.rlike(INTERNAL_V6) | inside, F.lit(False))
