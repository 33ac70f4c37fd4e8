"""The chance test of interval regularity: its table, and what it lets through."""

import numpy as np
import pytest

from pipeline.detect import chance
from pipeline.detect.scoring import score_pair


@pytest.mark.parametrize("n", [8, 16, 64])
def test_the_table_matches_a_fresh_simulation(n: int) -> None:
    # 60,000 draws put the 0.1 % quantile within a few hundredths of the table's 200,000.
    assert chance.simulate_quantile(n, 60_000, seed=5) == pytest.approx(
        chance.NULL_SPREAD_QUANTILE[n], abs=0.03
    )


def test_between_and_beyond_the_table_the_threshold_keeps_rising_towards_the_limit() -> None:
    n = np.array([3, 12, 50, 100, 1024, 5000, 10**6])
    thresholds = chance.chance_spread(n)
    assert np.all(np.diff(thresholds) > 0)
    assert thresholds[-1] == pytest.approx(chance.LIMIT, abs=0.01)
    assert chance.chance_spread(np.array([2]))[0] < 0  # too few intervals never beat chance


def test_random_arrivals_beat_chance_about_alpha_of_the_time() -> None:
    rng = np.random.default_rng(11)
    passed = 0
    trials = 4000
    for _ in range(trials):
        times = np.sort(rng.uniform(0, 21 * 86_400, 15))
        gaps = np.diff(times)
        median = np.median(gaps)
        passed += bool(chance.beyond_chance(median, np.median(np.abs(gaps - median)), 14))
    assert passed / trials < 0.005


def test_a_dozen_visits_at_random_do_not_beat_chance_but_a_timer_as_sparse_does() -> None:
    day = 86_400.0
    for seed in range(50):
        rng = np.random.default_rng(seed)
        # 14 visits to a site at random times over 21 days: "interval 1.5 days ± 40 %".
        visits = np.sort(rng.uniform(0, 21 * day, 14))
        browsing = score_pair(visits, np.full(14, 500.0), np.full(14, 9000.0), 21 * day)
        assert browsing is not None and not browsing.beyond_chance, seed
        # The same number of check-ins 6 h apart with 10 % jitter: few intervals, but a timer.
        checkins = np.cumsum(rng.uniform(0.9, 1.1, 14) * 6 * 3600)
        timer = score_pair(checkins, np.full(14, 500.0), np.full(14, 900.0), 21 * day)
        assert timer is not None and timer.beyond_chance, seed
        assert timer.intervals == 13
