"""WHOIS over RDAP: who registered the network a beacon destination lives in, and since when.

A C2 server in a network allocated last month to an unknown registrant reads differently from
one in a big cloud's block. Looked up with RDAP (RFC 9082 query `GET {base}/ip/{address}`,
RFC 9083 JSON answer), the structured successor of port-43 WHOIS.

Base URL (BEACON_RDAP_URL) defaults to ARIN's server, https://rdap.arin.net/registry: for an
address another registry manages, ARIN answers with a redirect to that registry's RDAP server
(RIPE, APNIC, LACNIC, AFRINIC), which `requests` follows, so one base covers the whole address
space without downloading the IANA bootstrap file. Any RDAP server (or rdap.org) works too.

Off by default (BEACON_RDAP=off): it sends destination addresses to a third party. When on:

* each IP is looked up at most once per BEACON_RDAP_CACHE_DAYS: answers ('ok' and 'not found')
  are cached in the lake at `{lake}/reference/rdap_cache.parquet`;
* at most BEACON_RDAP_MAX_LOOKUPS new lookups per run, at most BEACON_RDAP_RATE_PER_SECOND;
* no failure stops the run. The first connection failure or HTTP 429 ends the lookups of this
  run (no network, or the registry asks us to slow down: more requests would only wait or
  annoy it); the affected rows say why in `whois_status` and are retried next run.
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import requests

from pipeline.lake import Lake

CACHE_NAME = "rdap_cache.parquet"
# Short: a registry that does not answer in seconds will not answer in minutes either.
TIMEOUT_S = (3.05, 10)
USER_AGENT = "beacon-hunt-pipeline (RDAP lookups of beacon destinations)"
# The enriched columns this module fills, with their dtypes (fixed even on an empty day).
WHOIS_COLUMNS: dict[str, str] = {
    "whois_registrant": "string",
    "whois_network": "string",
    "whois_cidr": "string",
    "whois_allocated": "datetime64[ns, UTC]",
    "whois_status": "string",
}
# The cache table: the whois columns of one IP, when it was fetched, and the answer kind.
CACHE_COLUMNS: dict[str, str] = {
    "ip": "string",
    "fetched_at": "datetime64[ns, UTC]",
    "status": "string",  # 'ok' | 'not found': only real answers are cached
    **{c: t for c, t in WHOIS_COLUMNS.items() if c != "whois_status"},
}


@dataclass
class RdapReport:
    """Counts for the run's metadata: what was answered from where."""

    status: str
    looked_up: int = 0
    cached: int = 0
    found: int = 0
    not_found: int = 0
    failed: int = 0
    skipped: int = 0
    stopped_because: str | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v or k in ("status", "looked_up")}


def read_cache(lake_url: str) -> pd.DataFrame:
    """The cached answers (one row per IP); empty when there is no cache yet."""
    content = Lake(lake_url).read_reference(CACHE_NAME)
    if content is None:
        return _typed(pd.DataFrame(columns=list(CACHE_COLUMNS)), CACHE_COLUMNS)
    return _typed(pd.read_parquet(io.BytesIO(content)), CACHE_COLUMNS)


def write_cache(lake_url: str, cache: pd.DataFrame) -> None:
    """Replace the cache atomically (written aside, then moved), so a crash never leaves half."""
    Lake(lake_url).write_reference(CACHE_NAME, _typed(cache, CACHE_COLUMNS).to_parquet(index=False))


def parse_network(body: dict[str, Any]) -> dict[str, Any]:
    """The whois columns from an RFC 9083 IP network object."""
    cidrs = [
        f"{c.get('v4prefix') or c.get('v6prefix')}/{c.get('length')}"
        for c in body.get("cidr0_cidrs") or []
        if isinstance(c, dict) and (c.get("v4prefix") or c.get("v6prefix"))
    ]
    if not cidrs and body.get("startAddress") and body.get("endAddress"):
        cidrs = [f"{body['startAddress']} - {body['endAddress']}"]
    allocated = next(
        (
            e.get("eventDate")
            for e in body.get("events") or []
            if isinstance(e, dict) and e.get("eventAction") == "registration"
        ),
        None,
    )
    return {
        "whois_registrant": _registrant(body.get("entities") or []),
        "whois_network": body.get("name") or body.get("handle"),
        "whois_cidr": ", ".join(cidrs) or None,
        "whois_allocated": pd.to_datetime(allocated, utc=True, errors="coerce"),
    }


def _registrant(entities: list[Any]) -> str | None:
    """The name of the entity with role 'registrant' (searched depth-first, nested too)."""
    for entity in entities:
        if not isinstance(entity, dict):
            continue
        if "registrant" in (entity.get("roles") or []):
            name = _vcard_fn(entity.get("vcardArray")) or entity.get("handle")
            if name:
                return str(name)
        nested = _registrant(entity.get("entities") or [])
        if nested:
            return nested
    return None


def _vcard_fn(vcard: Any) -> str | None:
    # jCard (RFC 7095): ["vcard", [["fn", {}, "text", "Example Org"], ...]]
    if isinstance(vcard, list) and len(vcard) == 2 and isinstance(vcard[1], list):
        for prop in vcard[1]:
            if isinstance(prop, list) and len(prop) >= 4 and prop[0] == "fn":
                return str(prop[3])
    return None


class RdapClient:
    """`GET {base}/ip/{address}` with a rate limit; returns (status, whois columns)."""

    def __init__(
        self,
        base_url: str,
        rate_per_second: float,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.interval = 1.0 / rate_per_second
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/rdap+json", "User-Agent": USER_AGENT})
        self._clock, self._sleep = clock, sleep
        self._next_at = 0.0

    def lookup(self, address: str) -> tuple[str, dict[str, Any]]:
        """'ok' | 'not found' (answers), or 'rate limited' | 'no network: …' | 'failed: …'."""
        wait = self._next_at - self._clock()
        if wait > 0:
            self._sleep(wait)
        self._next_at = self._clock() + self.interval
        try:
            response = self.session.get(f"{self.base_url}/ip/{address}", timeout=TIMEOUT_S)
        except requests.ConnectionError as error:
            return f"no network: {_reason(error)}", {}
        except requests.Timeout:
            return "no network: timed out", {}
        except requests.RequestException as error:
            return f"failed: {_reason(error)}", {}
        if response.status_code == 404:
            return "not found", {}
        if response.status_code == 429:
            return "rate limited", {}
        if response.status_code != 200:
            return f"failed: HTTP {response.status_code}", {}
        try:
            body = response.json()
        except ValueError:
            return "failed: answer is not JSON", {}
        if not isinstance(body, dict) or body.get("objectClassName") not in (None, "ip network"):
            return "failed: answer is not an RDAP ip network object", {}
        return "ok", parse_network(body)


def _reason(error: Exception) -> str:
    # The innermost cause says it best ("Connection refused", "Name or service not known").
    cause: BaseException = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = str(cause).split("] ")[-1] if str(cause) else type(cause).__name__
    return text[:120]


def enrich(
    addresses: Iterable[str],
    lake_url: str,
    enabled: bool,
    client: RdapClient | None,
    cache_days: int,
    max_lookups: int,
    now: dt.datetime,
) -> tuple[pd.DataFrame, RdapReport]:
    """The whois columns per distinct address (index = address), via cache then RDAP.

    Public addresses only: a private or reserved one has no registry record ('not public').
    """
    unique = list(dict.fromkeys(str(a) for a in addresses))
    report = RdapReport(status="on" if enabled else "off")
    cache = read_cache(lake_url)  # Cached answers are shown even with lookups off.
    fresh_after = pd.Timestamp(now) - pd.Timedelta(days=cache_days)
    fresh = cache[cache["fetched_at"] > fresh_after].drop_duplicates("ip", keep="last")
    known = {row["ip"]: row for row in fresh.to_dict("records")}
    rows: dict[str, dict[str, Any]] = {}
    new_entries: list[dict[str, Any]] = []
    stop: str | None = None
    for address in unique:
        if address in known:
            entry = known[address]
            rows[address] = {**_whois(entry), "whois_status": f"cached {entry['status']}"}
            report.cached += 1
            continue
        if not enabled:
            rows[address] = {"whois_status": "off"}
            continue
        if not _is_public(address):
            rows[address] = {"whois_status": "not public"}
            continue
        if stop is not None or report.looked_up >= max_lookups:
            reason = stop or f"lookup limit reached ({max_lookups} per run)"
            rows[address] = {"whois_status": f"skipped: {reason}"}
            report.skipped += 1
            continue
        assert client is not None
        status, columns = client.lookup(address)
        report.looked_up += 1
        rows[address] = {**columns, "whois_status": status}
        if status in ("ok", "not found"):
            report.found += status == "ok"
            report.not_found += status == "not found"
            new_entries.append({"ip": address, "fetched_at": now, "status": status, **columns})
            continue
        report.failed += 1
        if len(report.errors) < 5:
            report.errors.append(f"{address}: {status}")
        if status == "rate limited" or status.startswith("no network"):
            stop = status
            report.stopped_because = status
    if new_entries:
        kept = cache[~cache["ip"].isin([e["ip"] for e in new_entries])]
        new = _typed(pd.DataFrame.from_records(new_entries), CACHE_COLUMNS)
        write_cache(lake_url, pd.concat([kept, new], ignore_index=True) if len(kept) else new)
    # Not from_records(index=…): with no addresses (a day without candidates) it reads the empty
    # index as a list of index fields and fails.
    frame = pd.DataFrame(
        [rows[a] for a in unique], index=pd.Index(unique, dtype=object), columns=list(WHOIS_COLUMNS)
    )
    return _typed(frame, WHOIS_COLUMNS), report


def _whois(entry: dict[str, Any]) -> dict[str, Any]:
    return {c: entry.get(c) for c in WHOIS_COLUMNS if c != "whois_status"}


# Never sent to a registry: addresses only meaningful inside a network. (Not `is_global`: that
# also excludes the documentation ranges, which registries answer and the sample data uses.)
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/3",
        "::/127",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


def _is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return not any(ip.version == n.version and ip in n for n in _LOCAL_NETWORKS)


def _typed(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    out = frame.reindex(columns=list(dtypes)).copy()
    for column, dtype in dtypes.items():
        if dtype.startswith("datetime64"):
            out[column] = pd.to_datetime(out[column], utc=True, errors="coerce").astype(dtype)
        else:
            values = out[column].astype(object).where(out[column].notna(), None)
            out[column] = pd.array(values.tolist(), dtype=dtype)
    return out
