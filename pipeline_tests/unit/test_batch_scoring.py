"""`score_pairs` (whole-array) must equal `score_pair` (one pair at a time), pair by pair.

Pairs are drawn from seeded generators of every shape the detector meets: exact and jittered
timers, timers hidden in bursts, browsing, working-hours implants, duplicate timestamps, bytes
not logged, pairs too small to score, and all of them mixed in one batch in random order.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detect.batch_scoring import score_pairs
from pipeline.detect.scoring import PairScore, score_pair

DAY = 86_400.0


def _timer(rng: np.random.Generator) -> np.ndarray:
    period = rng.choice([30.0, 60.0, 300.0, 3600.0, 6 * 3600.0])
    span = rng.uniform(0.2, 21) * DAY
    count = min(int(span / period), 3000)
    jitter = rng.uniform(0, 0.4) * period
    return rng.uniform(0, DAY) + np.arange(count) * period + rng.uniform(-jitter, jitter, count)


def _browsing(rng: np.random.Generator) -> np.ndarray:
    bursts = rng.uniform(0, 14 * DAY, rng.integers(1, 60))
    gaps = [np.cumsum(rng.exponential(2.0, rng.integers(1, 30))) for _ in bursts]
    return np.concatenate([b + g for b, g in zip(bursts, gaps, strict=True)])


def _hidden_timer(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([_timer(rng), _browsing(rng)])


def _working_hours(rng: np.random.Generator) -> np.ndarray:
    days = rng.integers(1, 21)
    times = [d * DAY + 9 * 3600 + np.arange(0, 8 * 3600, 600.0) for d in range(days)]
    return np.concatenate(times) + rng.normal(0, 20, sum(len(t) for t in times))


def _tiny(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, DAY, rng.integers(0, 7)).round()


def _duplicated(rng: np.random.Generator) -> np.ndarray:
    times = _timer(rng).round()
    return np.concatenate([times, rng.choice(times, len(times) // 3)]) if len(times) else times


SHAPES = [_timer, _browsing, _hidden_timer, _working_hours, _tiny, _duplicated]


def _pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(times in ms, sent, received, window in s): the lake keeps whole milliseconds."""
    times = SHAPES[rng.integers(len(SHAPES))](rng)
    times = rng.permutation(np.round(np.clip(times, 0, None) * 1000))
    n = len(times)
    sent = rng.choice([412, 413, 5000], n) if rng.random() < 0.5 else rng.lognormal(6, 1, n)
    received = rng.integers(900, 1200, n).astype(float)
    if rng.random() < 0.2:  # no bytes logged at all
        sent, received = np.full(n, -1.0), np.full(n, -1.0)
    elif rng.random() < 0.2:  # some logged, some not
        received[rng.random(n) < 0.7] = -1
    if rng.random() < 0.05:  # beyond what packs into one sort key: the slow path must agree
        sent[: n // 2] = 2.0**50
    return times, sent.round(), received, rng.choice([3600.0, DAY, 21 * DAY])


def _assert_same(expected: PairScore | None, scores, i: int) -> None:
    if expected is None:
        assert not scores.scored[i]
        return
    assert scores.scored[i]
    for name in (
        "score",
        "timing_score",
        "histogram_score",
        "duration_score",
        "median_interval_s",
        "interval_mad_s",
        "percent_beacon",
        "hours_active_ratio",
    ):
        assert getattr(scores, name)[i] == pytest.approx(getattr(expected, name), abs=1e-9), name
    if expected.size_score is None:
        assert np.isnan(scores.size_score[i])
    else:
        assert scores.size_score[i] == pytest.approx(expected.size_score, abs=1e-9)
    assert scores.interval_histogram[i].tolist() == expected.interval_histogram
    assert bool(scores.burst_view[i]) == (expected.view == "burst starts")
    assert scores.intervals[i] == expected.intervals
    assert bool(scores.beyond_chance[i]) == expected.beyond_chance


def test_batches_of_mixed_pairs_score_exactly_as_one_pair_at_a_time() -> None:
    seen: list[PairScore | None] = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        pairs = [_pair(rng) for _ in range(60)]
        offsets = np.r_[0, np.cumsum([len(p[0]) for p in pairs])]
        scores = score_pairs(
            offsets,
            np.concatenate([p[0] for p in pairs]),
            np.concatenate([p[1] for p in pairs]),
            np.concatenate([p[2] for p in pairs]),
            np.array([p[3] for p in pairs]),
        )
        expected = [score_pair(p[0] / 1000, p[1], p[2], window_s=p[3]) for p in pairs]
        for i, result in enumerate(expected):
            _assert_same(result, scores, i)
        seen += expected
    # The generators reach every branch the comparison is meant to cover.
    assert any(r is None for r in seen)
    assert any(r is not None and r.view == "burst starts" for r in seen)
    assert any(r is not None and r.size_score is None for r in seen)
    assert any(r is not None and 0 < r.histogram_score < 1 for r in seen)


def test_burst_view_is_taken_for_a_timer_hidden_in_browsing() -> None:
    rng = np.random.default_rng(7)
    timer = np.arange(0, 7 * DAY, 900.0) + rng.uniform(-5, 5, int(7 * DAY / 900))
    bursts = [b + np.cumsum(rng.exponential(1.5, 12)) for b in timer[::3]]
    times = np.round(np.concatenate([timer, *bursts]) * 1000)
    sizes = np.full(len(times), 500.0)
    expected = score_pair(times / 1000, sizes, sizes, 7 * DAY)
    assert expected is not None and expected.view == "burst starts"
    scores = score_pairs(np.array([0, len(times)]), times, sizes, sizes, np.array([7 * DAY]))
    _assert_same(expected, scores, 0)


def test_an_empty_batch_and_empty_pairs() -> None:
    scores = score_pairs(np.array([0]), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    assert len(scores.scored) == 0
    scores = score_pairs(np.array([0, 0, 0]), np.zeros(0), np.zeros(0), np.zeros(0), np.ones(2))
    assert not scores.scored.any()
