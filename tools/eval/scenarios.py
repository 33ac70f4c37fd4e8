"""A labeled 21-day network for the detection evaluation: C2 of every kind the detector claims to
find, benign pollers it must stay quiet on, and human browsing around them.

Each implant uses a real framework's timing model (REFERENCE §7): Cobalt Strike `S - U(0, j·S)`,
Empire/PoshC2 `U((1-j)S, (1+j)S)`, Sliver `S + U(0, J)`. Variants cover missed check-ins,
working-hours-only implants, a sleep changed mid-window, slow beacons, a short burst, a beacon
behind a CDN address its host also browses, and a worm (many hosts, new destination).
Everything is deterministic per (seed, day).
"""

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from pipeline.ingest.sample import (
    DEFAULT_WORKSPACE,
    SECONDS_PER_DAY,
    checkin_times,
    with_export_noise,
)

FIRST_DAY = dt.date(2026, 6, 1)
DAYS = 21
CDN = "151.101.77.10"  # a popular CDN address every host browses; one implant hides behind it


@dataclass(frozen=True)
class Implant:
    profile: str
    hosts: tuple[int, ...]
    destination: str
    port: int
    sleep_s: float
    model: str = "cobalt"  # cobalt | empire | sliver | exact
    jitter: float = 0.0  # fraction (cobalt, empire) or seconds (sliver)
    missed: float = 0.0  # share of check-ins that do not happen
    work_hours: bool = False  # 08-18 UTC on weekdays only
    new_sleep_s: float | None = None  # sleep changed half way through the window
    burst_day: int | None = None  # only on this day of the window...
    burst_hours: tuple[float, float] = (0.0, 24.0)  # ...and these hours
    first_day: int = 0  # active from this day of the window
    protocol: str = "TCP"
    sent: int = 420
    received: int = 1300
    # Domain fronting / CDN-hosted C2: every check-in goes to one of `addresses` under
    # `hostname` (`destination` is then the name, as the labels key it).
    hostname: str = ""
    addresses: tuple[str, ...] = ()
    # A long connection: sessions of this many seconds back to back, each logged at its end
    # with StartTime/EndTime (no check-ins).
    session_s: float = 0.0


@dataclass(frozen=True)
class Poller:
    """Benign periodic traffic. `label` is "benign" (prevalent: must not be reported) or
    "benign_periodic" (rare: reporting it is expected, it is not counted as an error)."""

    name: str
    share_of_hosts: float
    destination: str
    port: int
    protocol: str
    period_s: float
    jitter: float
    label: str = "benign"
    hosts: tuple[int, ...] = ()


IMPLANTS: tuple[Implant, ...] = (
    Implant("cobalt 60s exact", (3,), "203.0.113.11", 443, 60, "exact"),
    Implant("cobalt 60s j=20%", (5,), "203.0.113.12", 443, 60, "cobalt", 0.2),
    Implant("cobalt 60s j=50%", (7,), "203.0.113.13", 443, 60, "cobalt", 0.5),
    Implant("cobalt 60s j=99%", (9,), "203.0.113.14", 443, 60, "cobalt", 0.99),
    Implant("cobalt 300s j=30%", (11,), "203.0.113.15", 8443, 300, "cobalt", 0.3),
    Implant("empire 60s j=20%", (13,), "198.51.100.21", 80, 60, "empire", 0.2),
    Implant("empire 300s j=50%", (15,), "198.51.100.22", 443, 300, "empire", 0.5),
    Implant("sliver 60s +30s", (17,), "198.51.100.23", 8888, 60, "sliver", 30),
    Implant("sliver 600s +120s", (19,), "198.51.100.24", 443, 600, "sliver", 120),
    Implant("missed 60s j=10% 20% missed", (21,), "203.0.113.31", 443, 60, "cobalt", 0.1, 0.2),
    Implant("missed 300s 40% missed", (23,), "203.0.113.32", 443, 300, "empire", 0.1, 0.4),
    Implant(
        "work hours 120s j=20%", (25,), "203.0.113.41", 443, 120, "cobalt", 0.2, work_hours=True
    ),
    Implant(
        "work hours 30min j=10%", (27,), "203.0.113.42", 443, 1800, "empire", 0.1, work_hours=True
    ),
    Implant(
        "sleep change 60s to 10min", (29,), "203.0.113.51", 443, 60, "cobalt", 0.2, new_sleep_s=600
    ),
    Implant("slow 1h j=10%", (31,), "192.0.2.61", 443, 3600, "empire", 0.1),
    Implant("slow 6h j=10%", (33,), "192.0.2.62", 443, 6 * 3600, "empire", 0.1),
    Implant("slow 2h j=30% 10% missed", (35,), "192.0.2.63", 80, 7200, "cobalt", 0.3, 0.1),
    Implant(
        "burst 30s for 3h on one day",
        (37,),
        "192.0.2.71",
        443,
        30,
        "cobalt",
        0.1,
        burst_day=12,
        burst_hours=(13.0, 16.0),
    ),
    Implant("mixed with browsing behind a CDN", (39,), CDN, 443, 300, "cobalt", 0.2),
    Implant("udp 120s j=10%", (41,), "192.0.2.81", 53, 120, "empire", 0.1, protocol="UDP"),
    Implant(
        "new since 2 days 60s j=30%", (43,), "203.0.113.91", 443, 60, "cobalt", 0.3, first_day=19
    ),
    Implant(
        "worm: 8 hosts, new destination",
        (50, 51, 52, 53, 54, 55, 56, 57),
        "192.0.2.99",
        445,
        120,
        "cobalt",
        0.2,
        first_day=17,
    ),
)

POLLERS: tuple[Poller, ...] = (
    Poller("ntp", 1.0, "162.159.200.1", 123, "UDP", 1024, 0.0),
    Poller("telemetry", 1.0, "20.42.65.92", 443, "TCP", 900, 0.1),
    Poller("antivirus", 0.8, "91.228.167.1", 8883, "TCP", 301.6, 0.02),
    Poller("update", 0.9, "13.107.4.50", 80, "TCP", 3600, 0.3),
    Poller("sync client", 0.6, "52.114.128.9", 443, "TCP", 300, 0.5),
    Poller("licence server", 0.0, "198.18.0.10", 443, "TCP", 600, 0.0, "benign_periodic", (60, 61)),
    Poller("printer cloud", 0.0, "198.18.0.20", 443, "TCP", 1800, 0.05, "benign_periodic", (62,)),
)


@dataclass(frozen=True)
class ScenarioNetwork:
    """Implements `pipeline.ingest.sample.TrafficModel`."""

    hosts: int = 120
    seed: int = 7_331
    first_day: dt.date = FIRST_DAY
    days: int = DAYS
    workspace_resource_id: str = DEFAULT_WORKSPACE
    malformed_lines_per_day: int = 0
    implants: tuple[Implant, ...] = IMPLANTS
    pollers: tuple[Poller, ...] = POLLERS
    popular: tuple[str, ...] = field(default=())
    # Human browsing: bursts an hour on weekdays (a sixth of that at weekends).
    browsing_bursts_per_hour: float = 6.0
    # Habit visits: each host opens `habit_sites` of the `habit_pool` most popular sites now and
    # then, one connection a visit, `habit_visits_per_day` visits a site a day on average. A
    # dozen such visits in 21 days, to a site every host reaches, is browsing, not a timer.
    habit_sites: int = 0
    habit_pool: int = 40
    habit_visits_per_day: float = 0.0
    # Firewalls that log DestinationHostName: each popular site has a name, and the 40 most
    # popular are served from 3 addresses each (a CDN), so one name spans several pairs.
    named_sites: bool = False

    def host_ip(self, index: int) -> str:
        return f"10.50.{index // 200}.{index % 200 + 10}"

    def labels(self) -> list[dict]:
        """Every labeled pair: profile and label ("c2" or "benign_periodic")."""
        rows = []
        for implant in self.implants:
            for host in implant.hosts:
                rows.append(
                    dict(
                        SourceIP=self.host_ip(host),
                        DestinationIP=implant.destination,
                        DestinationPort=implant.port,
                        Protocol=implant.protocol,
                        profile=implant.profile,
                        label="c2",
                    )
                )
        for poller in self.pollers:
            for host in self._poller_hosts(poller):
                rows.append(
                    dict(
                        SourceIP=self.host_ip(host),
                        DestinationIP=poller.destination,
                        DestinationPort=poller.port,
                        Protocol=poller.protocol,
                        profile=poller.name,
                        label=poller.label,
                    )
                )
        return rows

    def _poller_hosts(self, poller: Poller) -> list[int]:
        if poller.hosts:
            return list(poller.hosts)
        rng = np.random.default_rng([self.seed, len(poller.name)])
        return sorted(rng.choice(self.hosts, int(self.hosts * poller.share_of_hosts), False))

    def events(self, day: dt.date) -> dict[str, np.ndarray]:
        index = (day - self.first_day).days
        rng = np.random.default_rng([self.seed, day.toordinal()])
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
        out: dict[str, list] = {
            k: []
            for k in (
                "time",
                "src",
                "dest",
                "port",
                "proto",
                "sent",
                "recv",
                "hostname",
                "duration",
            )
        }

        def add(times, host, dest, port, proto, sent, recv, name="", duration=0.0):
            n = len(times)
            out["hostname"].append(np.broadcast_to(np.asarray(name, dtype=object), (n,)))
            out["duration"].append(np.broadcast_to(np.asarray(duration, dtype=np.float64), (n,)))
            out["time"].append(np.asarray(times, dtype=np.float64))
            out["src"].append(np.full(n, self.host_ip(host), dtype=object))
            out["dest"].append(np.broadcast_to(np.asarray(dest, dtype=object), (n,)))
            out["port"].append(np.broadcast_to(np.asarray(port), (n,)).astype(np.int32))
            out["proto"].append(np.full(n, proto, dtype=object))
            out["sent"].append(np.broadcast_to(np.asarray(sent), (n,)).astype(np.int64))
            out["recv"].append(np.broadcast_to(np.asarray(recv), (n,)).astype(np.int64))

        popular = self._popular()
        names = self.site_names() if self.named_sites else np.full(len(popular), "", object)
        weights = 1.0 / np.arange(1, len(popular) + 1)
        weights /= weights.sum()
        weekend = day.weekday() >= 5
        for host in range(self.hosts):
            # Human browsing: bursts in working hours (some hosts into the evening).
            end_hour = 22 if host % 4 == 0 else 18
            rate = self.browsing_bursts_per_hour / (6.0 if weekend else 1.0)
            n_bursts = rng.poisson(rate * (end_hour - 8))
            for burst_start in start + rng.uniform(8 * 3600, end_hour * 3600, n_bursts):
                size = int(rng.integers(2, 30))
                times = burst_start + np.cumsum(rng.exponential(3.0, size))
                sites = rng.choice(len(popular), size=int(rng.integers(1, 4)), p=weights)
                chosen = rng.choice(sites, size)
                add(
                    times,
                    host,
                    popular[chosen],
                    443,
                    "TCP",
                    rng.lognormal(6.5, 1.0, size).astype(np.int64),
                    rng.lognormal(9.0, 1.5, size).astype(np.int64),
                    names[chosen],
                )
        for poller in self.pollers:
            for host in self._poller_hosts(poller):
                gaps = poller.period_s * rng.uniform(
                    1 - poller.jitter, 1 + poller.jitter, 200_000 // int(poller.period_s) + 2
                )
                times = start + rng.uniform(0, poller.period_s) + np.cumsum(gaps)
                times = times[times < start + SECONDS_PER_DAY]
                add(
                    times,
                    host,
                    poller.destination,
                    poller.port,
                    poller.protocol,
                    (500 * rng.uniform(0.95, 1.05, len(times))).astype(np.int64),
                    (1500 * rng.uniform(0.95, 1.05, len(times))).astype(np.int64),
                )
        for implant in self.implants:
            if index < implant.first_day or (
                implant.burst_day is not None and index != implant.burst_day
            ):
                continue
            sleep = implant.sleep_s
            if implant.new_sleep_s and index >= self.days // 2:
                sleep = implant.new_sleep_s
            if implant.session_s:
                for host in implant.hosts:
                    ends = (
                        start
                        + rng.uniform(0, implant.session_s)
                        + np.arange(30) * (implant.session_s + 60)
                    )
                    ends = ends[ends < start + SECONDS_PER_DAY]
                    add(
                        ends,
                        host,
                        implant.destination,
                        implant.port,
                        implant.protocol,
                        implant.sent * 1000,
                        implant.received * 1000,
                        duration=implant.session_s,
                    )
                continue
            for host in implant.hosts:
                times = _implant_times(rng, implant, sleep, start)
                if implant.burst_day is not None:
                    low, high = implant.burst_hours
                    times = times[(times >= start + low * 3600) & (times < start + high * 3600)]
                if implant.work_hours:
                    hours = (times - start) / 3600
                    times = times[(hours >= 8) & (hours < 18)] if not weekend else times[:0]
                destination: object = implant.destination
                if implant.addresses:
                    rotation = np.random.default_rng([self.seed, day.toordinal(), host, 11])
                    destination = rotation.choice(np.array(implant.addresses, object), len(times))
                add(
                    times,
                    host,
                    destination,
                    implant.port,
                    implant.protocol,
                    implant.sent + rng.integers(-6, 7, len(times)),
                    implant.received + rng.integers(-20, 21, len(times)),
                    implant.hostname or self.name_of(implant.destination),
                )
        if self.habit_sites:
            habit_rng = np.random.default_rng([self.seed, day.toordinal(), 7])
            for host in range(self.hosts):
                sites = np.random.default_rng([self.seed, host, 7]).choice(
                    self.habit_pool, self.habit_sites, replace=False
                )
                visits = habit_rng.poisson(self.habit_visits_per_day, len(sites))
                times = start + habit_rng.uniform(7 * 3600, 23 * 3600, visits.sum())
                add(
                    times,
                    host,
                    popular[np.repeat(sites, visits)],
                    443,
                    "TCP",
                    habit_rng.lognormal(6.5, 1.0, len(times)).astype(np.int64),
                    habit_rng.lognormal(9.0, 1.5, len(times)).astype(np.int64),
                    names[np.repeat(sites, visits)],
                )
        events = {k: np.concatenate(v) for k, v in out.items()}
        inside = (events["time"] >= start) & (events["time"] < start + SECONDS_PER_DAY)
        events = {k: v[inside] for k, v in events.items()}
        n = len(events["time"])
        events["vendor"] = np.full(n, "Fortinet", dtype=object)
        events["product"] = np.full(n, "Fortigate", dtype=object)
        return with_export_noise(rng, events)

    def _popular(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        first = rng.choice([23, 52, 104, 142, 185], size=400)
        sites = [
            f"{a}.{b}.{c}.{d}"
            for a, (b, c, d) in zip(first, rng.integers(1, 250, (400, 3)), strict=True)
        ]
        return np.array([CDN, *sites[1:]])

    def site_names(self) -> np.ndarray:
        """The host name of each popular address (aligned with `_popular`)."""
        count = len(self._popular())
        return np.array(
            [f"site{i // 3 if i < 120 else i - 80}.example" for i in range(count)], dtype=object
        )

    def name_of(self, address: str) -> str:
        """The host name a firewall logs for `address` (empty when sites are unnamed)."""
        if not self.named_sites:
            return ""
        where = np.flatnonzero(self._popular() == address)
        return str(self.site_names()[where[0]]) if len(where) else ""


def _implant_times(
    rng: np.random.Generator, implant: Implant, sleep: float, start: float
) -> np.ndarray:
    times = checkin_times(rng, implant.model, sleep, implant.jitter, start)
    return times[rng.random(len(times)) >= implant.missed] if implant.missed else times
