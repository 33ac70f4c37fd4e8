"""Every setting of the pipeline in one place: environment variable, default, validation, doc.

Settings are read once when the Dagster definitions load; a bad value stops the load with a
message that names every problem at once, instead of failing a run hours later.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.azure.storage import is_remote
from pipeline.lake import Lake

RFC1918 = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists all of them."""


@dataclass(frozen=True)
class SettingSpec:
    """One setting as the environment sees it; `SPECS` lists them in `Settings` field order."""

    env: str
    default: str
    doc: str
    parse: Callable[[str], Any]
    attr: str


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _between(
    number: Callable[[str], int] | Callable[[str], float], low: float, high: float
) -> Callable[[str], Any]:
    """A parser of `number` (int or float) that accepts only low..high."""

    def parse(value: str) -> int | float:
        parsed = number(value)
        if not low <= parsed <= high:
            raise ValueError(f"must be between {low} and {high}")
        return parsed

    return parse


def _date(value: str) -> dt.date:
    return dt.date.fromisoformat(value.strip())


def _url(value: str) -> str:
    value = value.strip()
    if "://" in value:
        scheme = value.split("://", 1)[0].lower()
        if scheme not in ("file", "abfss", "abfs", "az"):
            raise ValueError("must be a local path or a file://, abfss:// or az:// URL")
    if ".." in value.replace("\\", "/").split("/"):
        raise ValueError("must not contain '..'")
    stripped = value.rstrip("/")
    # Keep the root of a URL or of the filesystem whole: "file:///" must not become "file:".
    return value if not stripped or stripped.endswith(":") else stripped


def _optional_url(value: str) -> str | None:
    return _url(value) if value.strip() else None


# Azure's naming rules: a subscription id is a GUID; a resource group is 1-90 letters, digits,
# `_`, `-`, `.`, `(`, `)` not ending in `.`; a Log Analytics workspace is 4-63 letters, digits and
# `-`, starting and ending with a letter or digit. The id becomes a folder path of the export,
# so nothing else (no `..`, no `/`, no `*`) may get through.
_RESOURCE_ID = re.compile(
    r"^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"/resourcegroups/[-\w.()]{0,89}[-\w()]"
    r"/providers/microsoft\.operationalinsights"
    r"/workspaces/[a-z0-9][a-z0-9-]{2,61}[a-z0-9]$",
    re.IGNORECASE | re.ASCII,
)


def _workspace_resource_id(value: str) -> str | None:
    value = value.strip().rstrip("/")
    if not value:
        return None
    if not _RESOURCE_ID.match(value):
        raise ValueError(
            "must look like /subscriptions/SUB/resourcegroups/RG/providers/"
            "microsoft.operationalinsights/workspaces/NAME (SUB a GUID; RG and NAME as Azure "
            "names them)"
        )
    # The export writes the id in lower case: compare in lower case.
    return value.lower()


def _workspace_guid(value: str) -> str | None:
    """A Log Analytics Workspace ID (the GUID on the workspace's Overview page), or empty."""
    value = value.strip().lower()
    if value and not re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", value):
        raise ValueError(
            "must be the workspace's Workspace ID (Overview page), a GUID like "
            "0a1b2c3d-0000-1111-2222-333344445555, not its name or resource id"
        )
    return value or None


def _webhook_url(value: str) -> str | None:
    """Empty (off), an https:// URL, or plain http to 127.0.0.1 (a local relay, tests)."""
    value = value.strip()
    if not value:
        return None
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme == "https" and parsed.hostname:
        return value
    if parsed.scheme == "http" and parsed.hostname == "127.0.0.1":
        return value
    raise ValueError("must be an https:// URL (or http://127.0.0.1:PORT/… for a local relay)")


_SPARK_MASTER = re.compile(
    r"^(local(\[(\*|[1-9][0-9]*)(,[1-9][0-9]*)?\])?|yarn|spark://[\w.-]+:[0-9]{1,5}"
    r"|sc://[\w.-]+(:[0-9]{1,5})?(/;[\w=;.-]*)?|k8s://https://[\w.-]+(:[0-9]{1,5})?)$",
    re.ASCII,
)


def _spark_master(value: str) -> str:
    value = value.strip()
    if not _SPARK_MASTER.match(value):
        raise ValueError(
            "must be local, local[N], local[*], local[N,RETRIES], yarn, spark://HOST:PORT, "
            "sc://HOST[:PORT] or k8s://https://HOST[:PORT]"
        )
    return value


def _memory(value: str) -> str:
    value = value.strip().lower()
    if not re.fullmatch(r"[1-9][0-9]*[kmgt]?", value):
        raise ValueError("must be a size like 512m or 4g")
    return value


def _synapse_workspace(value: str) -> str | None:
    """Azure's rule: 1-50 lower-case letters, digits and `-`, starting and ending alphanumeric."""
    value = value.strip()
    if value and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?", value):
        raise ValueError("must be 1-50 lower-case letters, digits and '-' (the workspace name)")
    return value or None


def _synapse_pool(value: str) -> str | None:
    """Azure's rule: 1-15 letters and digits, starting with a letter."""
    value = value.strip()
    if value and not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,14}", value):
        raise ValueError("must be 1-15 letters and digits, starting with a letter")
    return value or None


def _https_url(value: str) -> str | None:
    value = value.strip().rstrip("/")
    if not value:
        return None
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme != "https" or not parsed.hostname or parsed.path:
        raise ValueError("must be an https://HOST[:PORT] URL without a path")
    return value


def _synapse_problems(values: Mapping[str, Any]) -> list[str]:
    """BEACON_SPARK=synapse needs a workspace, a pool, and storage the pool can reach."""
    if values.get("spark_mode") != "synapse":
        return []
    problems = [
        f"{env} is required with BEACON_SPARK=synapse"
        for env, attr in (
            ("SYNAPSE_WORKSPACE", "synapse_workspace"),
            ("SYNAPSE_SPARK_POOL", "synapse_spark_pool"),
        )
        if attr in values and not values[attr]
    ]
    for env, attr in (
        ("BEACON_LAKE_URL", "lake_url"),
        ("BEACON_EXPORT_URL", "export_url"),
        ("BEACON_SYNAPSE_STAGING_URL", "synapse_staging_url"),
    ):
        url = values.get(attr)
        if isinstance(url, str) and not url.lower().startswith(("abfss://", "abfs://")):
            problems.append(
                f"{env}={url!r}: a Synapse pool cannot reach it; use "
                "abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH"
            )
    return problems


def _subscription_id(value: str) -> str | None:
    """An Azure subscription id (a GUID), or empty."""
    value = value.strip().lower()
    if value and not re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", value):
        raise ValueError("must be the subscription id, a GUID like 0a1b2c3d-0000-1111-2222-…")
    return value or None


def _resource_group(value: str) -> str | None:
    """Azure's rule: 1-90 letters, digits, `_`, `-`, `.`, `(`, `)`, not ending in `.`."""
    value = value.strip()
    if value and not re.fullmatch(r"[-\w.()]{0,89}[-\w()]", value, re.ASCII):
        raise ValueError("must be 1-90 letters, digits, '_', '-', '.', '(' or ')', not ending '.'")
    return value or None


def _log_analytics_workspace_name(value: str) -> str | None:
    """Azure's rule: 4-63 letters, digits and `-`, starting and ending alphanumeric."""
    value = value.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]", value):
        raise ValueError("must be the workspace name: 4-63 letters, digits and '-'")
    return value or None


def _watchlist_alias(value: str) -> str:
    """Sentinel's alias is 3-64 characters and a segment of the ARM URL: letters, digits, _ -."""
    value = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{3,64}", value):
        raise ValueError("must be 3-64 letters, digits, '_' or '-'")
    return value


def _sentinel_problems(values: Mapping[str, Any]) -> list[str]:
    """The watchlist goes to Sentinel only with all three names; some but not all is a mistake."""
    names = {
        "SENTINEL_SUBSCRIPTION_ID": values.get("sentinel_subscription_id"),
        "SENTINEL_RESOURCE_GROUP": values.get("sentinel_resource_group"),
        "SENTINEL_WORKSPACE_NAME": values.get("sentinel_workspace_name"),
    }
    missing = [env for env, value in names.items() if not value]
    if missing and len(missing) < len(names):
        return [
            f"{', '.join(missing)} must be set too: the Sentinel watchlist needs "
            "SENTINEL_SUBSCRIPTION_ID, SENTINEL_RESOURCE_GROUP and SENTINEL_WORKSPACE_NAME "
            "together (or none of them, for the local CSV sink)"
        ]
    if missing and values.get("incident_min_risk") is not None:
        return [
            "BEACON_INCIDENT_MIN_RISK raises Sentinel incidents: it needs "
            "SENTINEL_SUBSCRIPTION_ID, SENTINEL_RESOURCE_GROUP and SENTINEL_WORKSPACE_NAME"
        ]
    return []


def _optional_risk(value: str) -> float | None:
    """Empty (off) or a risk score between 0 and 1."""
    return _between(float, 0.0, 1.0)(value) if value.strip() else None


def _vendors(value: str) -> tuple[str, ...]:
    return tuple(sorted({v.strip() for v in value.split(",") if v.strip()}))


def _networks(value: str) -> tuple[str, ...]:
    networks = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        network = ipaddress.ip_network(item, strict=False)
        if network.version != 4:
            raise ValueError(
                f"{item}: only IPv4 CIDRs can be configured; IPv6 unique-local (fc00::/7), "
                "link-local (fe80::/10) and loopback are always internal"
            )
        networks.append(str(network))
    if not networks:
        raise ValueError("needs at least one CIDR")
    return tuple(networks)


def _optional_path(value: str) -> str | None:
    """A local file path (GeoIP databases are opened from this machine's disk)."""
    value = value.strip()
    if value and "://" in value:
        raise ValueError("must be a local file path (copy the .mmdb next to the pipeline)")
    return value or None


def _on_off(value: str) -> bool:
    return _choice("off", "on")(value) == "on"


def _rdap_url(value: str) -> str:
    """An RDAP service base URL; `/ip/{address}` is appended to it."""
    value = value.strip().rstrip("/")
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme != "https" or not parsed.hostname or parsed.query or parsed.fragment:
        raise ValueError("must be an https:// RDAP base URL, e.g. https://rdap.arin.net/registry")
    return value


def setting(env: str, default: str, doc: str, parse: Callable[[str], Any]) -> Any:
    """A `Settings` field: its variable, its default as one would write it there, its doc.

    The field's default is the parsed text, so the text (what docs/settings.md shows) and the
    value (what `Settings()` holds) cannot disagree.
    """
    return field(default=parse(default), metadata={"spec": (env, default, doc, parse)})


@dataclass(frozen=True)
class Settings:
    """Every setting: its environment variable, default, validation and doc, in one place."""

    source: str = setting(
        "BEACON_SOURCE",
        "sample",
        "Where raw days come from: `sample` (generated, the default), `export` (a Log Analytics "
        "data-export container) or `query` (pulled from the workspace `LOG_ANALYTICS_WORKSPACE_ID` "
        "with the Log Analytics query API into the export layout under `BEACON_EXPORT_URL`).",
        _choice("sample", "export", "query"),
    )
    export_url: str = setting(
        "BEACON_EXPORT_URL",
        "./.data/export",
        "Root of the export container: the folder that holds `WorkspaceResourceId=/…`. A local "
        "path or `abfss://am-commonsecuritylog@ACCOUNT.dfs.core.windows.net/` (local Spark reads "
        "a remote day from a temporary local copy). In sample mode the generated days are "
        "written here.",
        _url,
    )
    workspace_resource_id: str | None = setting(
        "BEACON_WORKSPACE_RESOURCE_ID",
        "",
        "Read only this workspace's folder (its full resource id); empty reads every workspace "
        "found under the export root.",
        _workspace_resource_id,
    )
    log_analytics_workspace_id: str | None = setting(
        "LOG_ANALYTICS_WORKSPACE_ID",
        "",
        "Workspace ID (GUID) of the Log Analytics workspace to query: required with "
        "`BEACON_SOURCE=query`; also enables the Sentinel threat-intel lookup.",
        _workspace_guid,
    )
    log_analytics_endpoint: str = setting(
        "LOG_ANALYTICS_ENDPOINT",
        "https://api.loganalytics.io",
        "Log Analytics query API endpoint (another cloud's, e.g. "
        "`https://api.loganalytics.azure.cn`); tokens are requested for this audience.",
        _https_url,
    )
    query_max_rows_per_slice: int = setting(
        "BEACON_QUERY_MAX_ROWS_PER_SLICE",
        "400000",
        "Query mode: a day is pulled in time slices of at most this many rows (counted first; the "
        "service truncates at 500,000 rows or ~100 MiB, and a truncated slice is halved).",
        _between(int, 1, 500_000),
    )
    lake_url: str = setting(
        "BEACON_LAKE_URL",
        "./.data/lake",
        "Root of the data lake where every stage writes its parquet, quarantine and CSV output. "
        "A local path, or `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH` when Spark runs "
        "on Synapse or a cluster with hadoop-azure (local Spark cannot write it).",
        _url,
    )
    lookback_days: int = setting(
        "BEACON_LOOKBACK_DAYS",
        "21",
        "Days of `pair_daily_stats` that `beaconing_candidates` scores together (1–90).",
        _between(int, 1, 90),
    )
    start_date: dt.date = setting(
        "BEACON_START_DATE",
        "2026-01-01",
        "First daily partition (UTC, YYYY-MM-DD).",
        _date,
    )
    device_vendors: tuple[str, ...] = setting(
        "BEACON_DEVICE_VENDORS",
        "",
        "Comma list of `DeviceVendor` values to keep (e.g. `Fortinet,Check Point`); empty keeps "
        "every vendor.",
        _vendors,
    )
    internal_networks: tuple[str, ...] = setting(
        "BEACON_INTERNAL_NETWORKS",
        RFC1918,
        "Comma list of IPv4 CIDRs that are internal. Destinations inside them are never "
        "candidates; prevalence is counted among sources inside them.",
        _networks,
    )
    spark_mode: str = setting(
        "BEACON_SPARK",
        "local",
        "Where Spark jobs run: `local` (a Spark session in the Dagster process), `cluster` "
        "(the session connects to `BEACON_SPARK_MASTER`) or `synapse` (a run's Spark "
        "stages are one Livy batch on `SYNAPSE_SPARK_POOL`, reporting back through Dagster Pipes).",
        _choice("local", "cluster", "synapse"),
    )
    spark_master: str = setting(
        "BEACON_SPARK_MASTER",
        "local[*,4]",
        "Spark master URL: `local[N,RETRIES]` (local mode retries a failed task only when "
        "RETRIES > 1 is given), `spark://host:7077`, `yarn`, or a Spark Connect "
        "`sc://host:15002` URL.",
        _spark_master,
    )
    spark_driver_memory: str = setting(
        "BEACON_SPARK_DRIVER_MEMORY",
        "4g",
        "Driver memory of the local Spark session.",
        _memory,
    )
    synapse_workspace: str | None = setting(
        "SYNAPSE_WORKSPACE",
        "",
        "Synapse workspace name (`BEACON_SPARK=synapse`; required then).",
        _synapse_workspace,
    )
    synapse_spark_pool: str | None = setting(
        "SYNAPSE_SPARK_POOL",
        "",
        "Synapse Spark pool the jobs run on (`BEACON_SPARK=synapse`; required then).",
        _synapse_pool,
    )
    synapse_endpoint: str | None = setting(
        "SYNAPSE_ENDPOINT",
        "",
        "Synapse development endpoint; empty means `https://{SYNAPSE_WORKSPACE}.dev.azuresynapse.net`.",
        _https_url,
    )
    synapse_livy_api_version: str = setting(
        "SYNAPSE_LIVY_API_VERSION",
        "2020-12-01",
        "Livy API version in the batches path (`2020-12-01` or `2019-11-01-preview`).",
        _choice("2020-12-01", "2019-11-01-preview"),
    )
    synapse_executor_size: str = setting(
        "BEACON_SYNAPSE_EXECUTOR_SIZE",
        "small",
        "Node size of the batch's driver and executors: `small` (4 cores, 28g), `medium` "
        "(8, 56g) or `large` (16, 112g); the pool must offer it.",
        _choice("small", "medium", "large"),
    )
    synapse_executors: int = setting(
        "BEACON_SYNAPSE_EXECUTORS",
        "2",
        "Executors per batch (1–200).",
        _between(int, 1, 200),
    )
    synapse_staging_url: str | None = setting(
        "BEACON_SYNAPSE_STAGING_URL",
        "",
        "`abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH` the pool reads the code from "
        "(`PATH/_code/{hash}/`, uploaded once per version) and where Dagster Pipes exchanges "
        "context and messages (the container); empty means `BEACON_LAKE_URL`.",
        _optional_url,
    )
    min_connections: int = setting(
        "BEACON_MIN_CONNECTIONS",
        "12",
        "A pair needs at least this many connections in the window to be scored.",
        _between(int, 4, 1_000_000),
    )
    score_threshold: float = setting(
        "BEACON_SCORE_THRESHOLD",
        "0.7",
        "Pairs whose beacon score (0–1) reaches this are reported.",
        _between(float, 0.0, 1.0),
    )
    profile: str = setting(
        "BEACON_PROFILE",
        "default",
        "`default` (our scoring) or `notebook`: report what the Sentinel notebook's thresholds "
        "would (Percentbeacon > 75, > 100 connections, < 25 sources per destination).",
        _choice("default", "notebook"),
    )
    geoip_city_db: str | None = setting(
        "BEACON_GEOIP_CITY_DB",
        "",
        "Path of a MaxMind City database (`GeoLite2-City.mmdb`) for the enriched `geo_*` "
        "columns; empty leaves them empty.",
        _optional_path,
    )
    geoip_asn_db: str | None = setting(
        "BEACON_GEOIP_ASN_DB",
        "",
        "Path of a MaxMind ASN database (`GeoLite2-ASN.mmdb`) for `asn`, `as_org`, "
        "`hosting_provider`, `new_asn`; empty leaves them empty.",
        _optional_path,
    )
    rdap: bool = setting(
        "BEACON_RDAP",
        "off",
        "`on` looks up destination IPs' registrant, network name and allocation date over RDAP "
        "(sends public destination IPs to the registry); `off` does not.",
        _on_off,
    )
    rdap_url: str = setting(
        "BEACON_RDAP_URL",
        "https://rdap.arin.net/registry",
        "RDAP base URL (`/ip/ADDRESS` is appended). ARIN redirects other registries' networks "
        "to them, so one URL covers every IP.",
        _rdap_url,
    )
    rdap_cache_days: int = setting(
        "BEACON_RDAP_CACHE_DAYS",
        "30",
        "RDAP answers are kept in `{lake}/reference/rdap_cache.parquet` this many days.",
        _between(int, 1, 3650),
    )
    rdap_rate_per_second: float = setting(
        "BEACON_RDAP_RATE_PER_SECOND",
        "1",
        "At most this many RDAP requests per second (registries throttle bulk clients).",
        _between(float, 0.01, 50.0),
    )
    rdap_max_lookups: int = setting(
        "BEACON_RDAP_MAX_LOOKUPS",
        "200",
        "At most this many new RDAP lookups per run; the rest say `skipped: lookup limit "
        "reached` and are looked up by later runs.",
        _between(int, 1, 100_000),
    )
    threat_intel_file: str | None = setting(
        "BEACON_THREAT_INTEL_FILE",
        "",
        "Local indicator file (STIX 2.1 bundle `.json`, or `.csv`); empty uses "
        "`{lake}/reference/indicators.json` or `.csv` when present, else no local threat intel. "
        "A path that is set but missing fails the run (a typo must not silently switch TI off).",
        _optional_url,
    )
    max_quarantine_ratio: float = setting(
        "BEACON_MAX_QUARANTINE_RATIO",
        "0.05",
        "The quarantine check fails a day (and stops it before the watchlist) when more than "
        "this share of its records is quarantined.",
        _between(float, 0.0, 1.0),
    )
    min_window_coverage: float = setting(
        "BEACON_MIN_WINDOW_COVERAGE",
        "0.5",
        "The coverage check fails a day (and stops it before the watchlist) when less than this "
        "share of its lookback window's days is in the lake. The window counts from where history "
        "starts: `BEACON_START_DATE`, or the lake's first day when later.",
        _between(float, 0.0, 1.0),
    )
    failure_webhook_url: str | None = setting(
        "BEACON_FAILURE_WEBHOOK_URL",
        "",
        "When a run fails, its summary is logged and also POSTed as JSON to this URL (`https://` "
        "only, or `http://127.0.0.1:PORT/…` for a local relay); empty posts nothing.",
        _webhook_url,
    )
    sentinel_subscription_id: str | None = setting(
        "SENTINEL_SUBSCRIPTION_ID",
        "",
        "Subscription (GUID) of the Microsoft Sentinel workspace the watchlist is published to. "
        "With `SENTINEL_RESOURCE_GROUP` and `SENTINEL_WORKSPACE_NAME` (all three or none) the "
        "watchlist goes to Sentinel over ARM; without them it is only written to the lake as CSV.",
        _subscription_id,
    )
    sentinel_resource_group: str | None = setting(
        "SENTINEL_RESOURCE_GROUP",
        "",
        "Resource group of the Sentinel (Log Analytics) workspace.",
        _resource_group,
    )
    sentinel_workspace_name: str | None = setting(
        "SENTINEL_WORKSPACE_NAME",
        "",
        "Name (not the GUID) of the Log Analytics workspace Sentinel runs on.",
        _log_analytics_workspace_name,
    )
    watchlist_alias: str = setting(
        "BEACON_WATCHLIST_ALIAS",
        "beaconing-candidates",
        "Alias of the Sentinel watchlist (3–64 letters, digits, `_`, `-`); KQL reads it with "
        "`_GetWatchlist('beaconing-candidates')`. Created when missing.",
        _watchlist_alias,
    )
    sentinel_arm_endpoint: str = setting(
        "SENTINEL_ARM_ENDPOINT",
        "https://management.azure.com",
        "Azure Resource Manager endpoint the watchlist calls go to (https only), e.g. "
        "`https://management.chinacloudapi.cn`; tokens are requested for a `management.*` "
        "host's own audience, else for `https://management.azure.com/.default`.",
        _https_url,
    )
    watchlist_retention_days: int = setting(
        "BEACON_WATCHLIST_RETENTION_DAYS",
        "30",
        "A watchlist item (one per reported pair) is deleted once its pair has not been reported "
        "for this many days (1–3650).",
        _between(int, 1, 3650),
    )
    incident_min_risk: float | None = setting(
        "BEACON_INCIDENT_MIN_RISK",
        "",
        "Optional: also raise a Sentinel incident (one per pair and day, never duplicated or "
        "overwritten) for each reported pair whose `risk_score` (0–1) reaches this; empty raises "
        "none. Needs the `SENTINEL_*` settings.",
        _optional_risk,
    )

    @property
    def sentinel_configured(self) -> bool:
        """True when the watchlist is published to Sentinel (all three names are set)."""
        return bool(
            self.sentinel_subscription_id
            and self.sentinel_resource_group
            and self.sentinel_workspace_name
        )

    @property
    def lake(self) -> Lake:
        """The lake at `lake_url`: every table, manifest and reference file."""
        return Lake(self.lake_url)


SPECS: tuple[SettingSpec, ...] = tuple(
    SettingSpec(*f.metadata["spec"], attr=f.name) for f in fields(Settings)
)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise `SettingsError` naming each bad one."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in SPECS:
        raw = env.get(spec.env, spec.default)
        try:
            values[spec.attr] = spec.parse(raw)
        except ValueError as error:
            problems.append(f"{spec.env}={raw!r}: {error}")
    if values.get("source") == "query" and values.get("log_analytics_workspace_id", "") is None:
        problems.append(
            "BEACON_SOURCE=query needs LOG_ANALYTICS_WORKSPACE_ID (the Workspace ID GUID on "
            "the Log Analytics workspace's Overview page)"
        )
    start = values.get("start_date")
    if isinstance(start, dt.date) and start > dt.datetime.now(dt.UTC).date():
        problems.append(f"BEACON_START_DATE={start}: is in the future")
    problems.extend(_synapse_problems(values))
    problems.extend(_sentinel_problems(values))
    lake_url = values.get("lake_url")
    if values.get("spark_mode") == "local" and isinstance(lake_url, str) and is_remote(lake_url):
        # Spark writes the lake, and a local session has no hadoop-azure (the remote export is
        # staged to local disk instead, pipeline/azure/storage.py; the lake cannot be).
        problems.append(
            f"BEACON_LAKE_URL={lake_url!r}: local Spark cannot write Azure storage; use a local "
            "lake path, or run Spark where abfss:// works (BEACON_SPARK=synapse, or cluster with "
            "hadoop-azure: docs/deploy-azure.md)"
        )
    if problems:
        raise SettingsError("Invalid settings:\n  " + "\n  ".join(problems))
    return Settings(**values)


def settings_table_markdown() -> str:
    """The settings table of docs/settings.md, generated from SPECS so the two never disagree."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for spec in SPECS:
        default = f"`{spec.default}`" if spec.default else "(empty)"
        rows.append(f"| `{spec.env}` | {default} | {spec.doc} |")
    return "\n".join(rows)
