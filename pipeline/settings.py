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
from dataclasses import dataclass, field
from typing import Any

RFC1918 = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists all of them."""


@dataclass(frozen=True)
class SettingSpec:
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


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _float_between(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        number = float(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

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


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "BEACON_SOURCE",
        "sample",
        "Where raw days come from: `sample` (generated, the default), `export` (a Log Analytics "
        "data-export container) or `query` (Log Analytics query API; not available yet).",
        _choice("sample", "export", "query"),
        "source",
    ),
    SettingSpec(
        "BEACON_EXPORT_URL",
        "./.data/export",
        "Root of the export container: the folder that holds `WorkspaceResourceId=/…`. A local "
        "path or `abfss://am-commonsecuritylog@ACCOUNT.dfs.core.windows.net/`. In sample mode "
        "the generated days are written here.",
        _url,
        "export_url",
    ),
    SettingSpec(
        "BEACON_WORKSPACE_RESOURCE_ID",
        "",
        "Read only this workspace's folder (its full resource id); empty reads every workspace "
        "found under the export root.",
        _workspace_resource_id,
        "workspace_resource_id",
    ),
    SettingSpec(
        "BEACON_LAKE_URL",
        "./.data/lake",
        "Root of the data lake where every stage writes its parquet, quarantine and CSV output.",
        _url,
        "lake_url",
    ),
    SettingSpec(
        "BEACON_LOOKBACK_DAYS",
        "21",
        "Days of `pair_daily_stats` that `beaconing_candidates` scores together (1–90).",
        _int_between(1, 90),
        "lookback_days",
    ),
    SettingSpec(
        "BEACON_START_DATE",
        "2026-01-01",
        "First daily partition (UTC, YYYY-MM-DD).",
        _date,
        "start_date",
    ),
    SettingSpec(
        "BEACON_DEVICE_VENDORS",
        "",
        "Comma list of `DeviceVendor` values to keep (e.g. `Fortinet,Check Point`); empty keeps "
        "every vendor.",
        _vendors,
        "device_vendors",
    ),
    SettingSpec(
        "BEACON_INTERNAL_NETWORKS",
        RFC1918,
        "Comma list of IPv4 CIDRs that are internal. Destinations inside them are never "
        "candidates; prevalence is counted among sources inside them.",
        _networks,
        "internal_networks",
    ),
    SettingSpec(
        "BEACON_SPARK",
        "local",
        "Where Spark jobs run: `local` (a Spark session in the Dagster process) or `cluster` "
        "(the session connects to `BEACON_SPARK_MASTER`).",
        _choice("local", "cluster"),
        "spark_mode",
    ),
    SettingSpec(
        "BEACON_SPARK_MASTER",
        "local[*,4]",
        "Spark master URL: `local[N,RETRIES]` (local mode retries a failed task only when "
        "RETRIES > 1 is given), `spark://host:7077`, `yarn`, or a Spark Connect "
        "`sc://host:15002` URL.",
        _spark_master,
        "spark_master",
    ),
    SettingSpec(
        "BEACON_SPARK_DRIVER_MEMORY",
        "4g",
        "Driver memory of the local Spark session.",
        _memory,
        "spark_driver_memory",
    ),
    SettingSpec(
        "BEACON_MIN_CONNECTIONS",
        "12",
        "A pair needs at least this many connections in the window to be scored.",
        _int_between(4, 1_000_000),
        "min_connections",
    ),
    SettingSpec(
        "BEACON_SCORE_THRESHOLD",
        "0.7",
        "Pairs whose beacon score (0–1) reaches this are reported.",
        _float_between(0.0, 1.0),
        "score_threshold",
    ),
    SettingSpec(
        "BEACON_PROFILE",
        "default",
        "`default` (our scoring) or `notebook`: report what the Sentinel notebook's thresholds "
        "would (Percentbeacon > 75, > 100 connections, < 25 sources per destination).",
        _choice("default", "notebook"),
        "profile",
    ),
    SettingSpec(
        "BEACON_MAX_QUARANTINE_RATIO",
        "0.05",
        "The quarantine check fails a day (and stops it before the watchlist) when more than "
        "this share of its records is quarantined.",
        _float_between(0.0, 1.0),
        "max_quarantine_ratio",
    ),
    SettingSpec(
        "BEACON_MIN_WINDOW_COVERAGE",
        "0.5",
        "The coverage check fails a day (and stops it before the watchlist) when less than this "
        "share of its lookback window's days (from `BEACON_START_DATE` on) is in the lake.",
        _float_between(0.0, 1.0),
        "min_window_coverage",
    ),
    SettingSpec(
        "BEACON_FAILURE_WEBHOOK_URL",
        "",
        "When a run fails, its summary is logged and also POSTed as JSON to this URL (`https://` "
        "only, or `http://127.0.0.1:PORT/…` for a local relay); empty posts nothing.",
        _webhook_url,
        "failure_webhook_url",
    ),
)


@dataclass(frozen=True)
class Settings:
    source: str = "sample"
    export_url: str = "./.data/export"
    workspace_resource_id: str | None = None
    lake_url: str = "./.data/lake"
    lookback_days: int = 21
    start_date: dt.date = dt.date(2026, 1, 1)
    device_vendors: tuple[str, ...] = ()
    internal_networks: tuple[str, ...] = field(default_factory=lambda: tuple(RFC1918.split(",")))
    spark_mode: str = "local"
    spark_master: str = "local[*,4]"
    spark_driver_memory: str = "4g"
    min_connections: int = 12
    score_threshold: float = 0.7
    profile: str = "default"
    max_quarantine_ratio: float = 0.05
    min_window_coverage: float = 0.5
    failure_webhook_url: str | None = None


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
    if values.get("source") == "query":
        problems.append(
            "BEACON_SOURCE=query: pulling from the Log Analytics query API is not built yet; "
            "use `export` (a data-export container) or `sample`"
        )
    start = values.get("start_date")
    if isinstance(start, dt.date) and start > dt.datetime.now(dt.UTC).date():
        problems.append(f"BEACON_START_DATE={start}: is in the future")
    if problems:
        raise SettingsError("Invalid settings:\n  " + "\n  ".join(problems))
    return Settings(**values)


def settings_table_markdown() -> str:
    """The README's settings table, generated from SPECS so the two never disagree."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for spec in SPECS:
        default = f"`{spec.default}`" if spec.default else "(empty)"
        rows.append(f"| `{spec.env}` | {default} | {spec.doc} |")
    return "\n".join(rows)
