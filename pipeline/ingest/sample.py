"""Synthetic firewall traffic in the Log Analytics export layout: the embedded default source.

Internal hosts browse popular sites in bursts during working hours, every host polls NTP, a
telemetry service and an update service (benign and prevalent), and three hosts carry jittered
C2 beacons with the timing models of real frameworks (REFERENCE §7). Late arrivals, export-retry
duplicates and a few malformed lines are included, as in real exports.

Every day is deterministic: generating a day twice writes the same bytes.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.ingest.export_layout import day_folder, workspace_path

DEFAULT_WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/soc-rg/providers/"
    "microsoft.operationalinsights/workspaces/sentinel-ws"
)
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Beacon:
    name: str
    host: int  # index of the internal host
    destination: str
    port: int
    protocol: str
    sleep_s: float
    model: str  # "cobalt" S-U(0,jS) | "empire" U((1-j)S,(1+j)S) | "sliver" S+U(0,J) | "exact"
    jitter: float  # fraction for cobalt/empire, seconds for sliver
    sent: int
    received: int


# The sample's C2: what `make demo` must find.
BEACONS: tuple[Beacon, ...] = (
    Beacon("cobalt-strike 60s j=30%", 23, "203.0.113.50", 443, "TCP", 60, "cobalt", 0.3, 412, 1180),
    Beacon("sliver 300s +30s", 31, "198.51.100.77", 8443, "TCP", 300, "sliver", 30, 650, 2300),
    Beacon("empire hourly j=10%", 7, "192.0.2.200", 80, "TCP", 3600, "empire", 0.1, 380, 940),
)

# Benign, prevalent pollers: every host talks to these on a timer.
POLLERS: tuple[tuple[str, int, str, float, float, int, int], ...] = (
    # destination, port, protocol, period s, relative jitter, sent, received
    ("162.159.200.1", 123, "UDP", 1024, 0.01, 48, 48),
    ("20.42.65.92", 443, "TCP", 900, 0.10, 1900, 5200),
    ("13.107.4.50", 80, "TCP", 3600, 0.20, 700, 12000),
)
DNS_SERVER = "10.20.255.53"


@dataclass(frozen=True)
class SampleNetwork:
    hosts: int = 40
    seed: int = 20_261_128
    bursts_per_working_hour: float = 5.0
    # Share of the weekday browsing rate at weekends (offices are quiet; `make bench` sets 1.0
    # so every day has the same volume).
    weekend_browsing: float = 0.15
    # Records as wide as a Fortigate's (severity, interfaces, AdditionalExtensions: ~600 bytes
    # instead of ~400); `make bench` uses them so JSON volume matches real exports.
    full_records: bool = False
    workspace_resource_id: str = DEFAULT_WORKSPACE
    malformed_lines_per_day: int = 3

    def host_ip(self, index: int) -> str:
        return f"10.20.{index // 250}.{index % 250 + 1}"

    def events(self, day: dt.date) -> dict[str, np.ndarray]:
        return _day_events(self, day)


class TrafficModel(Protocol):
    """Anything that can say, deterministically, which connections happened on a day."""

    seed: int
    workspace_resource_id: str
    malformed_lines_per_day: int

    def events(self, day: dt.date) -> dict[str, np.ndarray]:
        """Arrays `time`, `arrival` (epoch s), `src`, `dest`, `port`, `proto`, `sent`, `recv`,
        `source_port`, `vendor`, `product`: one entry per record the export writes."""
        ...


def _popular_destinations(rng: np.random.Generator, count: int = 300) -> np.ndarray:
    """Public addresses of popular sites (first octets of large CDNs and clouds)."""
    first = rng.choice([23, 52, 104, 142, 151, 172, 185], size=count)
    # 172.x outside 172.16/12 only: keep every destination public.
    second = np.where(first == 172, rng.integers(64, 250, count), rng.integers(1, 250, count))
    rest = rng.integers(1, 250, size=(count, 2))
    return np.array([f"{a}.{b}.{c}.{d}" for a, b, (c, d) in zip(first, second, rest, strict=True)])


def checkin_times(
    rng: np.random.Generator, model: str, sleep_s: float, jitter: float, start: float
) -> np.ndarray:
    """One day of C2 check-ins from `start` (epoch s) under a framework's timing model:
    "cobalt" S-U(0,jS), "empire" U((1-j)S,(1+j)S), "sliver" S+U(0,J seconds), "exact" S."""
    mean_gap = {"cobalt": sleep_s * (1 - jitter / 2), "sliver": sleep_s + jitter / 2}
    count = int(SECONDS_PER_DAY / mean_gap.get(model, sleep_s) * 1.3) + 10
    if model == "cobalt":
        gaps = sleep_s - rng.uniform(0, jitter * sleep_s, count)
    elif model == "empire":
        gaps = rng.uniform((1 - jitter) * sleep_s, (1 + jitter) * sleep_s, count)
    elif model == "sliver":
        gaps = sleep_s + rng.uniform(0, jitter, count)
    else:
        gaps = np.full(count, sleep_s)
    times = start + rng.uniform(0, sleep_s) + np.cumsum(gaps)
    return times[times < start + SECONDS_PER_DAY]


def _day_events(network: SampleNetwork, day: dt.date) -> dict[str, np.ndarray]:
    """Every connection whose TimeGenerated falls on `day`, with its export arrival time."""
    rng = np.random.default_rng([network.seed, day.toordinal()])
    popular = _popular_destinations(np.random.default_rng(network.seed))
    weights = 1.0 / np.arange(1, len(popular) + 1)
    weights /= weights.sum()
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
    weekend = day.weekday() >= 5

    times, hosts, dests, ports, protos, sent, recv = [], [], [], [], [], [], []

    def add(t: np.ndarray, host: int | np.ndarray, dest, port, proto, s, r) -> None:
        n = len(t)
        times.append(t)
        hosts.append(np.broadcast_to(np.asarray(host), (n,)).astype(np.int32))
        dests.append(np.broadcast_to(np.asarray(dest, dtype=object), (n,)))
        ports.append(np.broadcast_to(np.asarray(port), (n,)).astype(np.int32))
        protos.append(np.broadcast_to(np.asarray(proto, dtype=object), (n,)))
        sent.append(np.broadcast_to(np.asarray(s), (n,)).astype(np.int64))
        recv.append(np.broadcast_to(np.asarray(r), (n,)).astype(np.int64))

    for host in range(network.hosts):
        # Browsing in bursts during working hours (UTC 07-18), lighter at weekends.
        rate = network.bursts_per_working_hour * (network.weekend_browsing if weekend else 1.0)
        n_bursts = rng.poisson(rate * 11)
        burst_starts = start + rng.uniform(7 * 3600, 18 * 3600, n_bursts)
        for burst_start in burst_starts:
            size = int(rng.integers(3, 25))
            t = burst_start + np.sort(rng.exponential(4.0, size)).cumsum()
            sites = rng.choice(popular, size=int(rng.integers(1, 4)), p=weights)
            dest = rng.choice(sites, size=size)
            add(
                t,
                host,
                dest,
                rng.choice([443, 443, 443, 80], size=size),
                "TCP",
                rng.lognormal(6.5, 1.0, size).astype(np.int64),
                rng.lognormal(9.0, 1.5, size).astype(np.int64),
            )
            add(t - 0.05, host, DNS_SERVER, 53, "UDP", 70, 180)
        for dest, port, proto, period, jitter, s, r in POLLERS:
            count = int(SECONDS_PER_DAY / period) + 1
            gaps = period * rng.uniform(1 - jitter, 1 + jitter, count)
            t = start + rng.uniform(0, period) + np.cumsum(gaps)
            t = t[t < start + SECONDS_PER_DAY]
            add(
                t,
                host,
                dest,
                port,
                proto,
                (s * rng.uniform(0.97, 1.03, len(t))).astype(np.int64),
                (r * rng.uniform(0.97, 1.03, len(t))).astype(np.int64),
            )

    for beacon in BEACONS:
        if beacon.host >= network.hosts:
            continue
        t = checkin_times(rng, beacon.model, beacon.sleep_s, beacon.jitter, start)
        add(
            t,
            beacon.host,
            beacon.destination,
            beacon.port,
            beacon.protocol,
            (beacon.sent + rng.integers(-8, 9, len(t))).astype(np.int64),
            (beacon.received + rng.integers(-30, 31, len(t))).astype(np.int64),
        )

    events = {
        "time": np.concatenate(times),
        "host": np.concatenate(hosts),
        "dest": np.concatenate(dests),
        "port": np.concatenate(ports),
        "proto": np.concatenate(protos),
        "sent": np.concatenate(sent),
        "recv": np.concatenate(recv),
    }
    inside = (events["time"] >= start) & (events["time"] < start + SECONDS_PER_DAY)
    events = {k: v[inside] for k, v in events.items()}
    fortinet = events["host"] < int(network.hosts * 0.75)
    events["src"] = np.array([network.host_ip(int(h)) for h in events.pop("host")], dtype=object)
    events["vendor"] = np.where(fortinet, "Fortinet", "Check Point").astype(object)
    events["product"] = np.where(fortinet, "Fortigate", "VPN-1 & FireWall-1").astype(object)
    return with_export_noise(rng, events)


def with_export_noise(rng: np.random.Generator, events: dict[str, np.ndarray]) -> dict:
    """Add what the export does to records: arrival lag, late arrivals, retry duplicates."""
    n = len(events["time"])
    # Export lag: seconds normally; 0.5 % arrive 30 min to 6 h late (possibly the next day).
    arrival = events["time"] + rng.uniform(1, 90, n)
    late = rng.random(n) < 0.005
    arrival[late] += rng.uniform(1800, 6 * 3600, late.sum())
    events["arrival"] = arrival
    events["source_port"] = rng.integers(49152, 65535, n)
    # Export retries: 0.3 % of records are written twice, the copy up to 3 h later.
    dup = np.flatnonzero(rng.random(n) < 0.003)
    events = {k: np.concatenate([v, v[dup]]) for k, v in events.items()}
    events["arrival"][n:] += rng.uniform(60, 3 * 3600, len(dup))
    return events


FORTIGATE_DETAIL = (
    '"DeviceEventClassID":"0000000013","LogSeverity":"3","DeviceVersion":"v7.2.5",'
    '"DeviceInboundInterface":"port1","DeviceOutboundInterface":"port2",'
    '"AdditionalExtensions":"cat=traffic:forward;FortinetFortiGatepolicyid=3",'
)


def _format_lines(events: dict[str, np.ndarray], full_records: bool = False) -> list[str]:
    detail = FORTIGATE_DETAIL if full_records else ""
    stamps = np.datetime_as_string((events["time"] * 1e6).astype("datetime64[us]"), unit="us")
    tenant = "11111111-2222-3333-4444-555555555555"
    n = len(stamps)
    names = events.get("hostname", np.full(n, "", dtype=object))
    durations = events.get("duration", np.zeros(n))
    starts = np.datetime_as_string(
        ((events["time"] - durations) * 1e6).astype("datetime64[us]"), unit="us"
    )
    lines = []
    for stamp, src, vendor, product, dest, port, proto, s, r, sport, name, span, opened in zip(
        stamps,
        events["src"],
        events["vendor"],
        events["product"],
        events["dest"],
        events["port"],
        events["proto"],
        events["sent"],
        events["recv"],
        events["source_port"],
        names,
        durations,
        starts,
        strict=True,
    ):
        # Optional fields, as firewalls log them: the host name, and a session's span.
        extra = f'"DestinationHostName":"{name}",' if name else ""
        if span > 0:
            extra += f'"StartTime":"{opened}0Z","EndTime":"{stamp}0Z",'
        lines.append(
            f'{{"TenantId":"{tenant}","TimeGenerated":"{stamp}0Z","DeviceVendor":"{vendor}",'
            f'"DeviceProduct":"{product}","DeviceAction":"accept","Activity":"traffic",'
            f'"SourceIP":"{src}","SourcePort":{sport},'
            f'"DestinationIP":"{dest}","DestinationPort":{port},"Protocol":"{proto}",'
            f'"SentBytes":{s},"ReceivedBytes":{r},{extra}{detail}"Computer":"fw01",'
            '"Type":"CommonSecurityLog"}'
        )
    return lines


def write_export_day(
    export_root: str | Path,
    day: dt.date,
    network: TrafficModel = SampleNetwork(),
    layout: str = "5min",
    max_lines_per_blob: int = 50_000,
) -> dict[str, int]:
    """Write the folders of `day` (records that *arrived* that day) in the export layout.

    `layout` is "5min" (`h=HH/m=MM/PT05M.json`) or "hourly" (`h=HH/m=00/PT1H.json`). Replaces
    the day's folders if they exist. Returns files, bytes and records written.
    """
    if layout not in ("5min", "hourly"):
        raise ValueError(f"layout must be 5min or hourly, not {layout!r}")
    folder_seconds = 300 if layout == "5min" else 3600
    blob_stem = "PT05M" if layout == "5min" else "PT1H"
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()

    # Records arriving today: today's on-time ones and yesterday's late ones.
    parts = [network.events(day), network.events(day - dt.timedelta(days=1))]
    events = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    today = (events["arrival"] >= start) & (events["arrival"] < start + SECONDS_PER_DAY)
    events = {k: v[today] for k, v in events.items()}
    order = np.argsort(events["arrival"], kind="stable")
    events = {k: v[order] for k, v in events.items()}
    lines = _format_lines(events, getattr(network, "full_records", False))
    folder_of = ((events["arrival"] - start) // folder_seconds).astype(int)

    rng = np.random.default_rng([network.seed, day.toordinal(), 99])
    broken = [
        '{"TimeGenerated":"' + day.isoformat() + 'T03:00:00Z","SourceIP":"10.20.0.9","Destinat',
        '{"TimeGenerated":"' + day.isoformat() + 'T04:00:00Z","SourceIP":"10.20.0.9",'
        '"DestinationIP":"151.101.1.1","DestinationPort":443,"SentBytes":"abc"}',
        "<html>502 Bad Gateway</html>",
    ][: network.malformed_lines_per_day]
    for text in broken:
        lines.append(text)
        folder_of = np.append(folder_of, int(rng.integers(0, SECONDS_PER_DAY // folder_seconds)))

    workspace = workspace_path(network.workspace_resource_id)
    root = Path(export_root) / day_folder(workspace, day)
    if root.exists():
        shutil.rmtree(root)
    files = size = 0
    order = np.argsort(folder_of, kind="stable")
    boundaries = np.flatnonzero(np.diff(folder_of[order])) + 1
    for chunk in np.split(order, boundaries):
        if len(chunk) == 0:
            continue
        offset = int(folder_of[chunk[0]]) * folder_seconds
        folder = root / f"h={offset // 3600:02d}" / f"m={offset % 3600 // 60:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for part, first in enumerate(range(0, len(chunk), max_lines_per_blob)):
            name = f"{blob_stem}.json" if part == 0 else f"{blob_stem}_{part}.json"
            text = "".join(lines[i] + "\n" for i in chunk[first : first + max_lines_per_blob])
            (folder / name).write_text(text)
            files += 1
            size += len(text)
    return {"files": files, "bytes": size, "records": len(lines)}
