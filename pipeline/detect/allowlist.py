"""The analysts' allowlist: destinations known to be benign, read from a CSV in the lake.

`{lake}/reference/allowlist.csv` with a header `kind,value,comment`; `kind` is `cidr` (an IPv4
or IPv6 network or address) or `domain` (matches the destination host name and its subdomains,
where the firewall logs one). Unusable lines are skipped and reported, never fatal.
"""

import csv
import io
import ipaddress
import re

from pipeline.lake import REFERENCE, Lake

ALLOWLIST_NAME = "allowlist.csv"
ALLOWLIST_PATH = f"{REFERENCE}/{ALLOWLIST_NAME}"  # inside the lake
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def parse(text: str) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """(entries, problems) from the CSV text."""
    entries: list[tuple[str, str]] = []
    problems: list[str] = []
    for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        kind = (row.get("kind") or "").strip().lower()
        value = (row.get("value") or "").strip().lower()
        if kind == "cidr":
            try:
                entries.append(("cidr", str(ipaddress.ip_network(value, strict=False))))
            except ValueError:
                problems.append(f"line {number}: {value!r} is not an IP network")
        elif kind == "domain" and DOMAIN.match(value.lstrip(".")):
            entries.append(("domain", value.lstrip(".")))
        else:
            problems.append(f"line {number}: kind must be cidr or domain with a valid value")
    return tuple(entries), problems


def load(lake_url: str) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """The lake's allowlist (empty when there is none)."""
    content = Lake(lake_url).read_reference(ALLOWLIST_NAME)
    if content is None:
        return (), []
    return parse(content.decode("utf-8"))
