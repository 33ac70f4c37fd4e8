"""Is a pair's timing more regular than chance would make it?

A dozen visits to a site over three weeks can show intervals of "1.5 days ± 40 %" by luck
alone: the spread of a few intervals says little. The null model is connections at random
times over the pair's active span (Poisson arrivals): their intervals are exponential whatever
the rate, and the spread measure `MAD / median` of the intervals does not depend on the rate, so
its distribution under the null depends only on the number of intervals n. A pair beats chance
when its spread is below the `ALPHA` quantile of that distribution for its n.

`NULL_SPREAD_QUANTILE` holds that quantile, simulated (200,000 draws per n up to 256, 100,000
above; `python -m pipeline.detect.chance` prints it again); between the tabulated n it is
interpolated in 1/√n, beyond them it follows the normal limit. A unit test re-simulates entries.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.001
# n intervals → the ALPHA quantile of MAD/median of n exponential intervals.
NULL_SPREAD_QUANTILE = {
    3: 0.0007,
    4: 0.0162,
    5: 0.0184,
    6: 0.0512,
    7: 0.0543,
    8: 0.0894,
    9: 0.0916,
    10: 0.1234,
    11: 0.1227,
    12: 0.1578,
    13: 0.1563,
    14: 0.1837,
    15: 0.1824,
    16: 0.2055,
    17: 0.2129,
    18: 0.2279,
    19: 0.2325,
    20: 0.2486,
    21: 0.2472,
    22: 0.2643,
    23: 0.2656,
    24: 0.2831,
    25: 0.2791,
    26: 0.2933,
    27: 0.2984,
    28: 0.3101,
    29: 0.3088,
    30: 0.3210,
    31: 0.3197,
    32: 0.3296,
    40: 0.3675,
    48: 0.3930,
    64: 0.4268,
    96: 0.4796,
    128: 0.5110,
    192: 0.5424,
    256: 0.5628,
    384: 0.5874,
    512: 0.6025,
    768: 0.6189,
    1024: 0.6296,
}
# The normal limit: MAD/median of exponentials tends to asinh(1/2) / ln 2 with a standard
# deviation of about 0.663 / √n; Z is the standard normal's ALPHA quantile (one-sided).
LIMIT = math.asinh(0.5) / math.log(2)
LIMIT_SD = 0.663
Z = 3.090

_N = np.array(sorted(NULL_SPREAD_QUANTILE), dtype=np.float64)
_Q = np.array([NULL_SPREAD_QUANTILE[int(n)] for n in _N])


def chance_spread(intervals: np.ndarray) -> np.ndarray:
    """The MAD/median below which `intervals` intervals are more regular than chance (at
    ALPHA); -1 (never) for fewer than 3."""
    n = np.asarray(intervals, dtype=np.float64)
    inside = np.interp(1 / np.sqrt(np.maximum(n, 3)), 1 / np.sqrt(_N[::-1]), _Q[::-1])
    limit = LIMIT - Z * LIMIT_SD / np.sqrt(np.maximum(n, 1))
    return np.where(n < 3, -1.0, np.where(n > _N[-1], limit, inside))


def beyond_chance(median_s: np.ndarray, mad_s: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """True where a pair's intervals (median, MAD, how many) are more regular than random
    arrivals would give them at ALPHA."""
    median_s = np.asarray(median_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(median_s > 0, np.asarray(mad_s, dtype=np.float64) / median_s, np.inf)
    return spread < chance_spread(intervals)


def simulate_quantile(n: int, draws: int, seed: int = 20261207) -> float:
    """The ALPHA quantile of MAD/median of n exponential intervals, by simulation."""
    rng = np.random.default_rng([seed, n])
    spreads = []
    for start in range(0, draws, 20_000):
        x = rng.exponential(size=(min(20_000, draws - start), n))
        median = np.median(x, axis=1)
        spreads.append(np.median(np.abs(x - median[:, None]), axis=1) / median)
    return float(np.quantile(np.concatenate(spreads), ALPHA))


if __name__ == "__main__":
    for n in NULL_SPREAD_QUANTILE:
        print(f"    {n}: {simulate_quantile(n, 200_000 if n <= 256 else 100_000):.4f},")
