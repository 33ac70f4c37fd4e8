"""pair_daily_stats and beaconing_candidates with real local Spark on crafted sessions."""

import datetime as dt
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.detect import beaconing_candidates, pair_daily_stats
from pipeline.detect.beaconing_candidates import DetectionParams
from pipeline.lake import Lake
from pipeline.lake import spark as lake_spark
from pipeline.lake.schemas import NETWORK_SESSIONS

START = dt.date(2026, 5, 1)
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def params(lookback_days: int, **overrides) -> DetectionParams:
    values = dict(
        lookback_days=lookback_days,
        first_day=START,
        internal_networks=RFC1918,
        min_connections=12,
        score_threshold=0.7,
    )
    values.update(overrides)
    return DetectionParams(**values)


def timer(day: dt.date, period_s: float, src: str, dst: str, port: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(day)
    offsets = np.arange(rng.uniform(0, period_s), 86_400, period_s)
    offsets = offsets + rng.uniform(-0.05, 0.05, len(offsets)) * period_s
    offsets = offsets[(offsets >= 0) & (offsets < 86_400)]
    return [
        {
            "TimeGenerated": start + pd.Timedelta(seconds=float(o)),
            "SourceIP": src,
            "DestinationIP": dst,
            "DestinationPort": port,
            "Protocol": "TCP",
            "SentBytes": 300,
            "ReceivedBytes": 900,
        }
        for o in offsets
    ]


def write_sessions(spark, lake_url: str, rows_by_day: dict[dt.date, list[dict]]) -> None:
    days = sorted(rows_by_day)
    records = []
    for day, rows in rows_by_day.items():
        for row in rows:
            full = {f.name: None for f in NETWORK_SESSIONS.fields}
            full.update(row, date=day.isoformat())
            full["TimeGenerated"] = pd.Timestamp(full["TimeGenerated"]).to_pydatetime()
            records.append(tuple(full[f.name] for f in NETWORK_SESSIONS.fields))
    frame = spark.createDataFrame(records, NETWORK_SESSIONS)
    counts = {d.isoformat(): len(rows_by_day[d]) for d in days}
    lake_spark.replace_days(frame, Lake(lake_url), "network_sessions", days, counts)
    for day in days:
        Lake(lake_url).write_manifest("network_sessions", day, {"rows": counts[day.isoformat()]})


def candidates(lake_url: str, day: dt.date) -> pd.DataFrame:
    path = Lake(lake_url).day_url("beaconing_candidates", day)
    return pd.read_parquet(path) if os.path.exists(path) else pd.DataFrame(columns=["SourceIP"])


def detect(spark, lake_url: str, rows: dict[dt.date, list[dict]], **overrides) -> pd.DataFrame:
    """Summarise the days of `rows` and score the last one over all of them; its candidates."""
    days = sorted(rows)
    write_sessions(spark, lake_url, rows)
    pair_daily_stats.run(spark, lake_url=lake_url, days=days)
    window = params(len(days), **overrides)
    beaconing_candidates.run(spark, lake_url=lake_url, days=[days[-1]], params=window)
    return candidates(lake_url, days[-1])


def test_daily_summary_keeps_sorted_aligned_events(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    day = START
    rows = timer(day, 600, "10.0.0.1", "198.51.100.1", 443, seed=1)
    rows = [dict(r, SentBytes=i) for i, r in enumerate(rows)][::-1]  # written out of order
    write_sessions(spark, lake_url, {day: rows})
    report = pair_daily_stats.run(spark, lake_url=lake_url, days=[day])
    assert report[day.isoformat()] == {"rows": 1, "strobes": 0}
    stats = pd.read_parquet(Lake(lake_url).day_url("pair_daily_stats", day)).iloc[0]
    assert stats["connections"] == len(rows)
    assert list(stats["event_ms"]) == sorted(stats["event_ms"])
    # Sizes follow their events: SentBytes was numbered in time order.
    assert list(stats["sent_bytes"]) == list(range(len(rows)))
    assert 0 <= stats["event_ms"][0] < 86_400_000


def test_strobes_keep_counts_not_events_and_are_reported_apart(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    day = START
    base = pd.Timestamp(day)
    strobe = [
        {
            "TimeGenerated": base + pd.Timedelta(milliseconds=900 * i),
            "SourceIP": "10.0.0.9",
            "DestinationIP": "198.51.100.9",
            "DestinationPort": 8080,
            "Protocol": "TCP",
        }
        for i in range(pair_daily_stats.STROBE_CONNECTIONS_PER_DAY + 10)
    ]
    write_sessions(spark, lake_url, {day: strobe})
    assert (
        pair_daily_stats.run(spark, lake_url=lake_url, days=[day])[day.isoformat()]["strobes"] == 1
    )
    stats = pd.read_parquet(Lake(lake_url).day_url("pair_daily_stats", day)).iloc[0]
    assert stats["is_strobe"] and stats["event_ms"] is None
    beaconing_candidates.run(spark, lake_url=lake_url, days=[day], params=params(1))
    found = candidates(lake_url, day)
    assert list(found["kind"]) == ["strobe"]
    assert "strobe" in found["reasons"].iloc[0]


def test_slow_beacon_needs_the_multi_day_window_and_raw_events_are_not_reread(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    days = [START + dt.timedelta(days=i) for i in range(7)]
    # Every 4 h: 6 connections a day, below min_connections=12 on any single day.
    write_sessions(
        spark,
        lake_url,
        {d: timer(d, 4 * 3600, "10.0.0.7", "203.0.113.7", 443, seed=i) for i, d in enumerate(days)},
    )
    pair_daily_stats.run(spark, lake_url=lake_url, days=days)
    shutil.rmtree(Lake(lake_url).table_url("network_sessions"))  # candidates must not need it

    last = days[-1]
    beaconing_candidates.run(spark, lake_url=lake_url, days=[last], params=params(1))
    assert candidates(lake_url, last).empty
    report = beaconing_candidates.run(spark, lake_url=lake_url, days=[last], params=params(7))
    found = candidates(lake_url, last)
    assert list(zip(found.SourceIP, found.DestinationIP, strict=True)) == [
        ("10.0.0.7", "203.0.113.7")
    ]
    row = found.iloc[0]
    assert 40 <= row["connections"] <= 43  # 6 a day, give or take the jitter at midnight
    assert abs(row["median_interval_s"] - 4 * 3600) < 0.1 * 4 * 3600
    assert row["days_seen"] == 7
    assert "interval 4.0 h" in row["reasons"]
    assert report[last.isoformat()]["window_days_present"] == 7


def test_window_reports_missing_days_and_clipping_where_history_starts(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    days = [START, START + dt.timedelta(days=1), START + dt.timedelta(days=3)]  # day 3 missing
    write_sessions(
        spark, lake_url, {d: timer(d, 300, "10.0.0.2", "203.0.113.2", 443, seed=3) for d in days}
    )
    pair_daily_stats.run(spark, lake_url=lake_url, days=days)
    target = days[-1]
    report = beaconing_candidates.run(spark, lake_url=lake_url, days=[target], params=params(21))
    facts = report[target.isoformat()]
    assert facts["window_start"] == START.isoformat()
    assert facts["window_clipped"] is True
    assert facts["window_days"] == 4
    assert facts["window_days_present"] == 3
    assert facts["window_days_missing"] == [(START + dt.timedelta(days=2)).isoformat()]
    assert Lake(lake_url).read_manifest("beaconing_candidates", target)["window_days_present"] == 3

    # An earlier start date changes nothing: history starts at the lake's first day, and the
    # days before it were never ingested rather than lost.
    early = params(21, first_day=START - dt.timedelta(days=60))
    facts = beaconing_candidates.run(spark, lake_url=lake_url, days=[target], params=early)
    assert facts[target.isoformat()]["window_start"] == START.isoformat()
    assert facts[target.isoformat()]["history_start"] == START.isoformat()
    assert facts[target.isoformat()]["window_days"] == 4
    assert facts[target.isoformat()]["window_days_missing"] == [
        (START + dt.timedelta(days=2)).isoformat()
    ]


def test_a_timer_shared_by_many_hosts_is_a_schedule_unless_its_destination_is_new(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    days = [START + dt.timedelta(days=i) for i in range(5)]
    rows: dict[dt.date, list[dict]] = {d: [] for d in days}
    for n, day in enumerate(days):
        # Four internal hosts poll the same service every day: a schedule, not reported.
        for i in range(4):
            rows[day] += timer(day, 900, f"10.0.0.{10 + i}", "198.51.100.50", 443, seed=10 * n + i)
        # One host beacons to a destination that external scanners also reach.
        rows[day] += timer(day, 120, "10.0.0.20", "203.0.113.20", 443, seed=100 + n)
        for i in range(3):
            rows[day] += timer(day, 3600, f"8.8.4.{i}", "203.0.113.20", 443, seed=200 + i)
        # From day 4 on, five hosts start the same timer to a new destination: a worm.
        if n >= 3:
            for i in range(5):
                rows[day] += timer(day, 300, f"10.0.1.{i}", "192.0.2.66", 445, seed=300 + i)
    found = detect(spark, lake_url, rows)
    assert "198.51.100.50" not in set(found.DestinationIP)
    beacon = found[found.SourceIP == "10.0.0.20"].iloc[0]
    assert beacon["internal_sources_to_destination"] == 1
    assert beacon["internal_sources"] == 10
    assert beacon["prevalence"] == 0.1
    assert beacon["periodic_sources_to_destination"] == 1
    worm = found[found.DestinationIP == "192.0.2.66"]
    assert len(worm) == 5
    assert (worm["periodic_sources_to_destination"] == 5).all()
    assert (worm["destination_age_days"] == 1).all()
    assert worm["reasons"].str.contains("possible worm: 5 hosts share this timer").all()


def test_a_few_hosts_of_many_on_one_timer_to_a_rare_destination_are_reported(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    days = [START + dt.timedelta(days=i) for i in range(5)]
    rows: dict[dt.date, list[dict]] = {d: [] for d in days}
    for n, day in enumerate(days):
        # Three of 40 internal hosts call one rare destination on a timer from the first day
        # (not new): a spreading compromise, not a schedule.
        for i in range(3):
            rows[day] += timer(day, 180, f"10.0.0.{10 + i}", "203.0.113.77", 443, seed=10 * n + i)
        # The other 37 hosts browse elsewhere now and then; they make up the population.
        for i in range(37):
            rows[day] += timer(day, 4 * 3600, f"10.0.3.{i}", "151.101.1.1", 443, seed=500 + i)[:2]
    found = detect(spark, lake_url, rows)
    group = found[found.DestinationIP == "203.0.113.77"]
    assert sorted(group.SourceIP) == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    assert (group["internal_sources"] == 40).all()
    assert (~group["new_destination"]).all()
    assert group["reasons"].str.contains("3 of 40 internal hosts share this timer").all()


def test_allowlisted_destinations_are_not_scored(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    day = START
    rows = timer(day, 120, "10.0.0.20", "203.0.113.20", 443, seed=1)
    rows += timer(day, 120, "10.0.0.21", "198.51.100.7", 443, seed=2)
    rows += [
        dict(r, DestinationHostName="telemetry.vendor.example")
        for r in timer(day, 120, "10.0.0.22", "192.0.2.9", 443, seed=3)
    ]
    # IPv6: an address inside the allowlisted /48, written compressed, and one just outside it.
    rows += timer(day, 120, "10.0.0.23", "2001:db8:cafe:1::9", 443, seed=4)
    rows += timer(day, 120, "10.0.0.24", "2001:db8:caff::9", 443, seed=5)
    write_sessions(spark, lake_url, {day: rows})
    pair_daily_stats.run(spark, lake_url=lake_url, days=[day])
    entries = (
        ("cidr", "203.0.113.0/24"),
        ("domain", "vendor.example"),
        ("cidr", "2001:db8:cafe::/48"),
    )
    beaconing_candidates.run(
        spark, lake_url=lake_url, days=[day], params=params(1, allowlist=entries)
    )
    assert set(candidates(lake_url, day).DestinationIP) == {"198.51.100.7", "2001:db8:caff::9"}


def test_a_beacon_over_rotating_addresses_of_one_name_is_reported_once_with_its_ips(
    spark, tmp_path
):
    lake_url = str(tmp_path / "lake")
    days = [START + dt.timedelta(days=i) for i in range(3)]
    addresses = [f"198.51.100.{i}" for i in range(1, 9)]
    rows: dict[dt.date, list[dict]] = {}
    for n, day in enumerate(days):
        # A 10-minute timer whose every check-in resolves a CDN name to one of 8 addresses:
        # per address, a few dozen connections at irregular gaps.
        beats = timer(day, 600, "10.0.0.30", "0.0.0.0", 443, seed=40 + n)
        rng = np.random.default_rng(n)
        rows[day] = [
            dict(b, DestinationIP=str(rng.choice(addresses)), DestinationHostName="cdn.c2.example")
            for b in beats
        ]
        for i in range(20):  # the population
            rows[day] += timer(day, 4 * 3600, f"10.0.3.{i}", "151.101.1.1", 443, seed=500 + i)[:2]
    found = detect(spark, lake_url, rows)
    mine = found[found.SourceIP == "10.0.0.30"]
    assert len(mine) == 1, mine[["DestinationIP", "score", "reasons"]]
    row = mine.iloc[0]
    assert row["kind"] == "beacon"
    assert row["destination_hostname"] == "cdn.c2.example"
    assert sorted(row["destination_ips"]) == addresses
    assert row["DestinationIP"] in addresses
    assert row["median_interval_s"] == pytest.approx(600, rel=0.05)
    assert "one timer to cdn.c2.example over 8 addresses" in row["reasons"]
    assert row["internal_sources_to_destination"] == 1


def test_a_session_open_for_hours_is_a_long_connection(spark, tmp_path):
    lake_url = str(tmp_path / "lake")
    day = START
    opened = pd.Timestamp(day) + pd.Timedelta(hours=1)
    session = {
        "SourceIP": "10.0.0.40",
        "DestinationIP": "203.0.113.40",
        "DestinationPort": 8443,
        "Protocol": "TCP",
        "StartTime": opened.to_pydatetime(),
        "EndTime": (opened + pd.Timedelta(hours=9, minutes=30)).to_pydatetime(),
        "TimeGenerated": opened + pd.Timedelta(hours=9, minutes=30),
    }
    short = dict(
        session,
        DestinationIP="203.0.113.41",
        EndTime=(opened + pd.Timedelta(minutes=50)).to_pydatetime(),
        TimeGenerated=opened + pd.Timedelta(minutes=50),
    )
    write_sessions(spark, lake_url, {day: [session, short]})
    pair_daily_stats.run(spark, lake_url=lake_url, days=[day])
    beaconing_candidates.run(spark, lake_url=lake_url, days=[day], params=params(1))
    found = candidates(lake_url, day)
    assert list(found.DestinationIP) == ["203.0.113.40"]
    row = found.iloc[0]
    assert row["kind"] == "long_connection"
    assert row["longest_connection_s"] == pytest.approx(9.5 * 3600)
    assert row["score"] == 0.9
    assert "one session open 9.5 h (band 8 h or more)" in row["reasons"]


def visits(rng, day: dt.date, src: str, dst: str, per_hour: float, hours=(8, 18)) -> list[dict]:
    """Browsing: bursts of a few connections seconds apart, at random times of working hours."""
    start = pd.Timestamp(day)
    rows = []
    for _ in range(rng.poisson(per_hour * (hours[1] - hours[0]))):
        at = rng.uniform(hours[0], hours[1]) * 3600
        for k in range(rng.integers(1, 8)):
            rows.append(
                {
                    "TimeGenerated": start + pd.Timedelta(seconds=at + k * rng.uniform(0.2, 3)),
                    "SourceIP": src,
                    "DestinationIP": dst,
                    "DestinationPort": 443,
                    "Protocol": "TCP",
                    "SentBytes": int(rng.integers(400, 3000)),
                    "ReceivedBytes": int(rng.integers(2000, 90_000)),
                }
            )
    return rows


def test_sparse_visits_to_a_site_every_host_reaches_are_not_reported(spark, tmp_path):
    # The false-positive class of issue 14: one connection a visit, a visit every day or two,
    # to a destination every host uses: a dozen intervals of ±40-55 %.
    lake_url = str(tmp_path / "lake")
    days = [START + dt.timedelta(days=i) for i in range(21)]
    rng = np.random.default_rng(14)
    rows: dict[dt.date, list[dict]] = {d: [] for d in days}
    for i in range(40):
        at = pd.Timestamp(START) + pd.Timedelta(hours=rng.uniform(0, 24))
        while at < pd.Timestamp(days[-1] + dt.timedelta(days=1)):
            rows[at.date()].append(
                {
                    "TimeGenerated": at,
                    "SourceIP": f"10.0.4.{i}",
                    "DestinationIP": "151.101.1.1",
                    "DestinationPort": 443,
                    "Protocol": "TCP",
                    "SentBytes": 800,
                    "ReceivedBytes": 20_000,
                }
            )
            at += pd.Timedelta(hours=36 * rng.uniform(0.5, 1.5))
    assert detect(spark, lake_url, rows, min_connections=10).empty


@pytest.mark.parametrize(("sleep_s", "jitter"), [(300, 0.2), (60, 0.5)])
def test_a_jittered_timer_inside_browsing_of_a_popular_destination_is_reported(
    spark, tmp_path, sleep_s, jitter
):
    # Issue 14, class 3: C2 with Empire's jitter (300 s ± 20 %, 60 s ± 50 %) to a destination
    # 15 of 40 hosts browse, the infected host among them.
    lake_url = str(tmp_path / "lake")
    days = [START + dt.timedelta(days=i) for i in range(3)]
    rng = np.random.default_rng(3)
    popular = "104.16.0.10"
    rows: dict[dt.date, list[dict]] = {d: [] for d in days}
    for day in days:
        for i in range(40):
            host = f"10.0.5.{i}"
            if i < 15:
                rows[day] += visits(rng, day, host, popular, per_hour=3)
            rows[day] += visits(rng, day, host, f"192.0.2.{i}", per_hour=1)
        at = pd.Timestamp(day) + pd.Timedelta(seconds=rng.uniform(0, sleep_s))
        while at.date() == day:
            rows[day].append(
                {
                    "TimeGenerated": at,
                    "SourceIP": "10.0.5.0",
                    "DestinationIP": popular,
                    "DestinationPort": 443,
                    "Protocol": "TCP",
                    "SentBytes": int(rng.integers(200, 260)),
                    "ReceivedBytes": int(rng.integers(500, 700)),
                }
            )
            at += pd.Timedelta(seconds=sleep_s * rng.uniform(1 - jitter, 1 + jitter))
    found = detect(spark, lake_url, rows)
    assert list(zip(found.SourceIP, found.DestinationIP, strict=True)) == [("10.0.5.0", popular)]
    row = found.iloc[0]
    assert row["median_interval_s"] == pytest.approx(sleep_s, rel=0.1)
    assert row["internal_sources_to_destination"] == 15
