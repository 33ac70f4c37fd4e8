"""Held-out scenario networks: every parameter drawn at random from the seed.

The fixed scenario (`scenarios.py`) is the one the detector's thresholds were checked against,
so its score says little about data the detector has not seen. Here the network size, the
browsing rate, habit visits to popular sites, the benign pollers and the C2 (framework, sleep,
jitter, missed check-ins, working hours, start day, a small group of infected hosts, a
destination every host browses, a worm) are drawn per seed. Tune on `TUNING_SEEDS`; report on
`REPORT_SEEDS`, which nobody looks at while changing the detector.

The ranges below were set from what the frameworks allow (REFERENCE §7) and from the failure
classes of an independent export (issue 14), before any detector result on these seeds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.detect.scoring import human_interval
from tools.eval.scenarios import FIRST_DAY, Implant, Poller, ScenarioNetwork

__all__ = ["ScenarioNetwork", "draw_network"]

TUNING_SEEDS = (1, 2)
REPORT_SEEDS = (101, 102)
# Sleeps from half a minute to four hours, log-uniform: most C2 is fast, slow C2 is the hard part.
SLEEP_RANGE_S = (30.0, 4 * 3600.0)
POLLER_PERIODS_S = (60, 120, 300, 600, 900, 1024, 1800, 3600, 4 * 3600)


def draw_network(seed: int, first_day: dt.date = FIRST_DAY, days: int = 21) -> ScenarioNetwork:
    """The labeled network of `seed`: same seed, same network."""
    rng = np.random.default_rng([seed, 14])
    hosts = int(rng.integers(60, 161))
    base = ScenarioNetwork(hosts=hosts, seed=seed, first_day=first_day, days=days)
    popular = base._popular()
    free_hosts = list(rng.permutation(hosts))

    def take_hosts(count: int) -> tuple[int, ...]:
        return tuple(int(free_hosts.pop()) for _ in range(count))

    rare = iter(_rare_destinations(rng, 64))
    implants = []
    for i in range(int(rng.integers(14, 23))):
        model = str(rng.choice(["cobalt", "empire", "sliver", "exact"], p=[0.4, 0.3, 0.2, 0.1]))
        sleep = float(np.exp(rng.uniform(*np.log(SLEEP_RANGE_S))))
        jitter = {
            "cobalt": rng.uniform(0.0, 0.9),
            "empire": rng.uniform(0.0, 0.5),
            "sliver": rng.uniform(0.0, 0.5) * sleep,
            "exact": 0.0,
        }[model]
        group = int(rng.integers(2, 6)) if rng.random() < 0.25 else 1
        on_popular = rng.random() < 0.2
        destination = str(popular[rng.integers(1, 40)]) if on_popular else next(rare)
        missed = float(rng.uniform(0.0, 0.3)) if rng.random() < 0.3 else 0.0
        work_hours = bool(rng.random() < 0.15)
        first = int(rng.integers(days - 6, days - 1)) if rng.random() < 0.15 else 0
        port = 443 if on_popular else int(rng.choice([443, 443, 80, 8443, 8080, 53]))
        protocol = "UDP" if port == 53 else "TCP"
        parts = [
            f"{i:02d} {model} {human_interval(sleep)}",
            f"j={jitter:.0f}s" if model == "sliver" else f"j={jitter:.0%}",
            f"{missed:.0%} missed" if missed else "",
            "work hours" if work_hours else "",
            f"new since day {first}" if first else "",
            f"{group} hosts" if group > 1 else "",
            "on a popular destination" if on_popular else "",
        ]
        implants.append(
            Implant(
                " ".join(p for p in parts if p),
                take_hosts(group),
                destination,
                port,
                sleep,
                model,
                float(jitter),
                missed,
                work_hours,
                first_day=first,
                protocol=protocol,
                sent=int(rng.integers(200, 2000)),
                received=int(rng.integers(300, 5000)),
            )
        )
    if rng.random() < 0.5:
        size = int(rng.integers(6, 13))
        implants.append(
            Implant(
                f"{len(implants):02d} worm: {size} hosts, new destination",
                take_hosts(size),
                next(rare),
                445,
                float(rng.choice([60, 120, 300])),
                "cobalt",
                0.2,
                first_day=int(rng.integers(days - 5, days - 2)),
            )
        )
    implants += _named_and_long(
        np.random.default_rng([seed, 14, 2]), len(implants), take_hosts, rare
    )
    pollers = []
    for i in range(int(rng.integers(3, 7))):
        port, protocol = [(443, "TCP"), (80, "TCP"), (123, "UDP"), (8883, "TCP")][i % 4]
        a, b, c = rng.choice([13, 20, 40, 52]), rng.integers(1, 250), rng.integers(1, 250)
        pollers.append(
            Poller(
                f"poller {i}",
                float(rng.uniform(0.3, 1.0)),
                f"{a}.{b}.{c}.{i + 1}",
                port,
                protocol,
                float(rng.choice(POLLER_PERIODS_S)),
                float(rng.uniform(0.0, 0.4)),
            )
        )
    for i in range(int(rng.integers(1, 3))):
        pollers.append(
            Poller(
                f"rare poller {i}",
                0.0,
                f"198.18.{i}.{rng.integers(1, 250)}",
                443,
                "TCP",
                float(rng.choice(POLLER_PERIODS_S)),
                float(rng.uniform(0.0, 0.2)),
                "benign_periodic",
                take_hosts(int(rng.integers(1, 3))),
            )
        )
    return ScenarioNetwork(
        hosts=hosts,
        seed=seed,
        first_day=first_day,
        days=days,
        implants=tuple(implants),
        pollers=tuple(pollers),
        browsing_bursts_per_hour=float(rng.uniform(2.0, 8.0)),
        habit_sites=int(rng.integers(5, 21)),
        habit_pool=40,
        habit_visits_per_day=float(rng.uniform(0.3, 1.2)),
        named_sites=True,
    )


def _named_and_long(
    rng: np.random.Generator, first: int, take_hosts: Any, rare: Iterator[str]
) -> list[Implant]:
    """C2 of the two kinds that need fields besides the five-tuple (drawn from their own
    stream, so the other implants of a seed stay as they were): a timer to one host name over
    rotating addresses, and a long connection."""
    implants = []
    if rng.random() < 0.7:
        count = int(rng.integers(3, 13))
        sleep = float(np.exp(rng.uniform(np.log(60), np.log(1800))))
        jitter = float(rng.uniform(0.0, 0.5))
        implants.append(
            Implant(
                f"{first:02d} cobalt {human_interval(sleep)} j={jitter:.0%} "
                f"to a host name over {count} addresses",
                take_hosts(1),
                f"cdn{first}.fronted.example",
                443,
                sleep,
                "cobalt",
                jitter,
                hostname=f"cdn{first}.fronted.example",
                addresses=tuple(next(rare) for _ in range(count)),
            )
        )
    if rng.random() < 0.7:
        hours = float(rng.uniform(1.5, 14))
        implants.append(
            Implant(
                f"{first + len(implants):02d} long connection: sessions of {hours:.1f} h",
                take_hosts(1),
                next(rare),
                int(rng.choice([443, 8443, 4444])),
                0.0,
                session_s=hours * 3600,
            )
        )
    return implants


def _rare_destinations(rng: np.random.Generator, count: int) -> list[str]:
    """Public addresses no benign traffic of the scenario uses (documentation and hosting
    ranges), one per implant."""
    prefixes = ["203.0.113", "198.51.100", "192.0.2", "45.77"]
    seen: set[str] = set()
    while len(seen) < count:
        prefix = str(rng.choice(prefixes))
        tail = ".".join(str(rng.integers(1, 250)) for _ in range(4 - prefix.count(".") - 1))
        seen.add(f"{prefix}.{tail}")
    # Sorted before shuffling: a set's order changes with each process's string hashing.
    return [str(a) for a in rng.permutation(sorted(seen))]


def c2_class(implant: Implant) -> str:
    """The class of C2 a held-out implant belongs to, for recall by class."""
    if implant.addresses:
        return "host name over rotating addresses"
    if implant.session_s:
        return "long connection"
    if "worm" in implant.profile:
        return "worm"
    if "popular destination" in implant.profile:
        return "on a popular destination"
    if len(implant.hosts) > 1:
        return "small group, rare destination"
    if implant.work_hours:
        return "working hours only"
    if implant.sleep_s >= 7200:
        return "slow (2 h or more)"
    return "one host, rare destination"
