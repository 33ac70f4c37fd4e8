"""Crafted sequences for the cases the detector claims beyond plain jitter (issue: detection)."""

import numpy as np
import pytest

from pipeline.detect import allowlist
from pipeline.detect.scoring import histogram_score, score_pair

DAY = 86_400.0


def cobalt(rng, sleep, jitter, start, end):
    gaps = sleep - rng.uniform(0, jitter * sleep, int((end - start) / (sleep * (1 - jitter))) + 10)
    times = start + np.cumsum(gaps)
    return times[times < end]


def sizes(n, value=400):
    return np.full(n, value), np.full(n, 3 * value)


def test_working_hours_implant_is_judged_on_the_hours_it_works():
    rng = np.random.default_rng(4)
    days = [cobalt(rng, 120, 0.2, d * DAY + 8 * 3600, d * DAY + 18 * 3600) for d in range(21)]
    times = np.concatenate(days)
    # Over the whole span the nights look like outages (1 - CV ≈ 0); day by day it is steady.
    assert histogram_score(times, 108) > 0.9
    result = score_pair(times, *sizes(len(times)), window_s=21 * DAY)
    assert result.score > 0.85
    assert result.hours_active_ratio < 0.5


def test_sparse_random_traffic_does_not_look_steady_day_by_day():
    rng = np.random.default_rng(5)
    times = np.sort(rng.uniform(0, 10 * DAY, 80))
    assert histogram_score(times, float(np.median(np.diff(times)))) < 0.4


def test_sleep_changed_mid_window_still_scores_as_a_timer():
    rng = np.random.default_rng(6)
    first = cobalt(rng, 60, 0.2, 0, 10 * DAY)
    second = cobalt(rng, 600, 0.2, 10 * DAY, 21 * DAY)
    times = np.concatenate([first, second])
    result = score_pair(times, *sizes(len(times)), window_s=21 * DAY)
    # The 60 s half dominates the interval statistics, the 10 min half keeps the days covered.
    assert result.median_interval_s < 60
    assert result.score > 0.75


def test_beacon_inside_bursty_browsing_on_the_same_pair_keeps_a_high_score():
    rng = np.random.default_rng(7)
    beacon = cobalt(rng, 300, 0.2, 0, 7 * DAY)
    bursts = []
    for day in range(7):
        for start in rng.uniform(day * DAY + 8 * 3600, day * DAY + 18 * 3600, 20):
            bursts.append(start + np.cumsum(rng.exponential(3.0, int(rng.integers(2, 20)))))
    browsing = np.concatenate(bursts)
    times = np.concatenate([beacon, browsing])
    sent = np.concatenate([np.full(len(beacon), 400), rng.lognormal(6.5, 1.0, len(browsing))])
    received = np.concatenate([np.full(len(beacon), 900), rng.lognormal(9, 1.5, len(browsing))])
    mixed = score_pair(times, sent, received, window_s=7 * DAY)
    alone = score_pair(browsing, sent[len(beacon) :], received[len(beacon) :], window_s=7 * DAY)
    assert mixed.score > 0.7
    assert mixed.view == "burst starts"
    assert alone.score < 0.55
    assert 200 < mixed.median_interval_s < 300


def test_short_burst_of_check_ins_on_one_day_of_a_long_window():
    rng = np.random.default_rng(8)
    times = cobalt(rng, 30, 0.1, 12 * DAY + 13 * 3600, 12 * DAY + 16 * 3600)
    result = score_pair(times, *sizes(len(times)), window_s=21 * DAY)
    assert result.timing_score > 0.9
    assert result.duration_score == pytest.approx(3 / 24, abs=0.05)
    assert result.score > 0.7


def test_allowlist_parsing_keeps_good_lines_and_reports_bad_ones():
    text = (
        "kind,value,comment\n"
        "cidr,203.0.113.0/24,vendor\n"
        "cidr,2001:db8::1,v6 host\n"
        "domain,.Updates.Example.com,update service\n"
        "cidr,not-an-ip,oops\n"
        "asn,AS13335,unsupported\n"
        "domain,bad_domain!,oops\n"
    )
    entries, problems = allowlist.parse(text)
    assert entries == (
        ("cidr", "203.0.113.0/24"),
        ("cidr", "2001:db8::1/128"),
        ("domain", "updates.example.com"),
    )
    assert [p.split(":")[0] for p in problems] == ["line 5", "line 6", "line 7"]


def test_missing_allowlist_is_empty(tmp_path):
    assert allowlist.load(str(tmp_path)) == ((), [])
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "allowlist.csv").write_text("kind,value\ncidr,10.0.0.0/8\n")
    assert allowlist.load(str(tmp_path)) == ((("cidr", "10.0.0.0/8"),), [])


def test_constant_sizes_are_consistent_even_when_zero():
    rng = np.random.default_rng(9)
    times = cobalt(rng, 12, 0.3, 0, 3000)  # NjRAT-like: a few seconds apart, 50 minutes
    zeros = np.zeros(len(times))
    result = score_pair(times, zeros, zeros, window_s=3000)
    assert result.size_score == 1.0
    # Judged against the 50 minutes observed, not a whole day, the timer covers its window.
    assert result.duration_score == pytest.approx(1.0, abs=0.01)
    assert result.score > 0.9
