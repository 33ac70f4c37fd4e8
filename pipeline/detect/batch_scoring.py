"""`score_pair` for many pairs at once: the same subscores, computed with whole-array numpy.

The window's pairs arrive as one flat array of connection times with per-pair offsets (Arrow's
list layout). Every statistic of `pipeline.detect.scoring` is a per-pair reduction, so it is
done here on segments of flat arrays: sort by (pair, value), index each segment's quantiles,
`bincount` per pair. A few dozen numpy calls per batch replace a few dozen per pair, which is
what made scoring the cost of a long lookback (about 1 ms a pair, 25 k pairs at 21 days).

`pipeline.detect.scoring` stays the readable definition; the unit tests hold this module
equal to it, pair by pair.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pipeline.detect.chance import beyond_chance
from pipeline.detect.scoring import (
    BURST_GAP_S,
    HISTOGRAM_EDGES_S,
    MIN_BINS,
    MIN_BINS_PER_DAY,
    MIN_BURSTS,
    MIN_INTERVALS,
    NOTEBOOK_MIN_DELTA_S,
    NOTEBOOK_NEIGHBOURS,
    PairScore,
)

HISTOGRAM_BINS = len(HISTOGRAM_EDGES_S) - 1


@dataclass
class PairScores:
    """Columns of `PairScore`, one entry per pair; `scored` is False where `score_pair` is None
    (too few distinct connection times), and the other columns are then meaningless."""

    scored: np.ndarray
    score: np.ndarray
    timing_score: np.ndarray
    size_score: np.ndarray  # NaN where the firewall logged no bytes
    histogram_score: np.ndarray
    duration_score: np.ndarray
    median_interval_s: np.ndarray
    interval_mad_s: np.ndarray
    percent_beacon: np.ndarray
    hours_active_ratio: np.ndarray
    interval_histogram: np.ndarray  # (pairs, HISTOGRAM_BINS)
    burst_view: np.ndarray  # the score is that of the burst-start view
    intervals: np.ndarray  # intervals between distinct times of the view
    beyond_chance: np.ndarray  # more regular than random arrivals (chance.py)

    def take(self, other: PairScores, where: np.ndarray) -> None:
        """Replace the entries of the pairs in `where` by `other`'s."""
        for name in self.__dataclass_fields__:
            getattr(self, name)[where] = getattr(other, name)[where]

    def pair(self, i: int) -> PairScore:
        """Pair i's score as `score_pair` returns it (for a scored pair)."""
        size = float(self.size_score[i])
        values = {
            f.name: float(getattr(self, f.name)[i]) for f in fields(PairScore) if f.type == "float"
        }
        return PairScore(
            **values,
            size_score=None if np.isnan(size) else size,
            interval_histogram=self.interval_histogram[i].tolist(),
            view="burst starts" if self.burst_view[i] else "all",
            intervals=int(self.intervals[i]),
            beyond_chance=bool(self.beyond_chance[i]),
        )


def score_pairs(
    offsets: np.ndarray,
    times_ms: np.ndarray,
    sent_bytes: np.ndarray,
    received_bytes: np.ndarray,
    window_s: np.ndarray,
) -> PairScores:
    """Score pair i from `times_ms[offsets[i]:offsets[i+1]]` (whole milliseconds, as the lake
    keeps them; aligned sizes, -1 = not logged) over a window of `window_s[i]` seconds, as
    `score_pair` does on the same times in seconds, both views."""
    pairs = len(offsets) - 1
    counts = np.diff(offsets)
    pair = np.repeat(np.arange(pairs), counts)
    times_ms = np.asarray(times_ms, dtype=np.int64)
    # Stable: equal times keep their order, as in score_pair (the first one's sizes count).
    order = _order_within(pair, times_ms, stable=True)
    times_ms = times_ms[order]
    sent = np.asarray(sent_bytes, dtype=np.int64)[order]
    received = np.asarray(received_bytes, dtype=np.int64)[order]
    window = np.asarray(window_s, dtype=np.float64)

    every = _score_view(pair, times_ms, sent, received, window, pairs)
    start = _segment_starts(pair) | np.r_[True, np.diff(times_ms / 1000.0) >= BURST_GAP_S]
    starts = np.bincount(pair[start], minlength=pairs)
    eligible = every.scored & (starts != counts) & (starts >= MIN_BURSTS)
    keep = start & eligible[pair]
    bursts = _score_view(pair[keep], times_ms[keep], sent[keep], received[keep], window, pairs)
    better = eligible & bursts.scored & (bursts.score > every.score + 0.05)
    every.take(bursts, better)
    every.burst_view[better] = True
    return every


def _segment_starts(segment: np.ndarray) -> np.ndarray:
    return np.r_[True, segment[1:] != segment[:-1]] if len(segment) else np.zeros(0, bool)


def _score_view(
    pair: np.ndarray,
    times_ms: np.ndarray,
    sent: np.ndarray,
    received: np.ndarray,
    window: np.ndarray,
    pairs: int,
) -> PairScores:
    """`_score_view` of every pair; input sorted by (pair, time)."""
    distinct = _segment_starts(pair) | np.r_[True, times_ms[1:] != times_ms[:-1]]
    enough = np.bincount(pair[distinct], minlength=pairs) >= MIN_INTERVALS + 1
    distinct &= enough[pair]
    pair, times_ms = pair[distinct], times_ms[distinct]
    sent, received = sent[distinct], received[distinct]
    times = times_ms / 1000.0

    follows = ~_segment_starts(pair)
    interval_pair = pair[follows]
    # Seconds as score_pair has them (percent_beacon rounds them), and exact milliseconds for
    # the quantiles (integers sort fast).
    intervals = np.diff(times)[follows[1:]] if len(times) else times
    intervals_ms = np.diff(times_ms)[follows[1:]] if len(times) else times_ms
    timing, median_ms, mad_ms = _regularity(interval_pair, intervals_ms, pairs)
    interval_count = np.bincount(interval_pair, minlength=pairs)
    median, mad = median_ms / 1000.0, mad_ms / 1000.0
    size_parts = []
    for sizes in (sent, received):
        logged = sizes >= 0
        regular, _, _ = _regularity(pair[logged], sizes[logged], pairs)
        enough_sizes = np.bincount(pair[logged], minlength=pairs) >= 4
        size_parts.append(np.where(enough_sizes, regular, np.nan))
    logged_parts = np.vstack(size_parts)
    views = (~np.isnan(logged_parts)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        size = np.where(views > 0, np.nansum(logged_parts, axis=0) / views, np.nan)
    histogram = _histogram_score(pair, times, median, pairs)
    duration, hours_active = _duration_score(pair, times, window, pairs)
    parts = np.vstack([timing, histogram, duration])
    has_size = ~np.isnan(size)
    score = (parts.sum(axis=0) + np.where(has_size, size, 0.0)) / (3 + has_size)
    clipped = np.clip(intervals, 1, 86_400)
    in_range = (clipped >= HISTOGRAM_EDGES_S[0]) & (clipped <= HISTOGRAM_EDGES_S[-1])
    bucket = np.minimum(
        np.searchsorted(HISTOGRAM_EDGES_S, clipped, side="right") - 1, HISTOGRAM_BINS - 1
    )
    interval_histogram = np.bincount(
        (interval_pair * HISTOGRAM_BINS + bucket)[in_range], minlength=pairs * HISTOGRAM_BINS
    ).reshape(pairs, HISTOGRAM_BINS)
    return PairScores(
        scored=enough,
        score=score,
        timing_score=timing,
        size_score=size,
        histogram_score=histogram,
        duration_score=duration,
        median_interval_s=median,
        interval_mad_s=mad,
        percent_beacon=_percent_beacon(interval_pair, intervals, pairs),
        hours_active_ratio=hours_active,
        interval_histogram=interval_histogram,
        burst_view=np.zeros(pairs, dtype=bool),
        intervals=interval_count,
        beyond_chance=beyond_chance(median, mad, interval_count),
    )


# Sorting by (segment, value) packs both in one int64 when the values fit (milliseconds up to
# 139 years, sizes up to 4 TB): ten times faster than a two-key lexsort.
VALUE_BITS = 42


def _packable(values: np.ndarray) -> bool:
    return values.dtype.kind == "i" and (
        not len(values) or (values.min() >= 0 and values.max() < 1 << VALUE_BITS)
    )


def _order_within(segment: np.ndarray, values: np.ndarray, stable: bool = False) -> np.ndarray:
    """Indices that sort non-negative integer `values` by (segment, value)."""
    if not _packable(values):
        return np.lexsort((values, segment))
    key = (segment.astype(np.int64) << VALUE_BITS) | values
    return np.argsort(key, kind="stable" if stable else None)


def _sorted_within(segment: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Non-negative integer `values` sorted by (segment, value)."""
    if not _packable(values):
        return values[np.lexsort((values, segment))]
    key = np.sort((segment.astype(np.int64) << VALUE_BITS) | values)
    return key & ((1 << VALUE_BITS) - 1)


def _quantiles(
    segment: np.ndarray, values: np.ndarray, pairs: int, quantiles: tuple[float, ...]
) -> tuple[list[np.ndarray], np.ndarray]:
    """numpy's linear-interpolation percentiles per segment, and the segment sizes."""
    ordered = _sorted_within(segment, values).astype(np.float64)
    size = np.bincount(segment, minlength=pairs)
    begin = np.r_[0, np.cumsum(size)[:-1]]
    last = np.maximum(size - 1, 0)
    result = []
    for q in quantiles:
        position = q * last
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, last)
        fraction = position - low
        a = ordered[np.minimum(begin + low, len(ordered) - 1)] if len(ordered) else np.zeros(pairs)
        b = ordered[np.minimum(begin + high, len(ordered) - 1)] if len(ordered) else np.zeros(pairs)
        # numpy's lerp, including its switch of end for fractions >= 0.5
        diff = b - a
        result.append(np.where(fraction >= 0.5, b - diff * (1 - fraction), a + diff * fraction))
    return result, size


def _regularity(
    segment: np.ndarray, values: np.ndarray, pairs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`regularity` per segment of integer values, with each segment's median and MAD."""
    (q1, q2, q3), size = _quantiles(segment, values, pairs, (0.25, 0.5, 0.75))
    if _packable(values):
        # A median is a value or the mean of two: doubled, deviations from it stay integers.
        doubled_median = np.rint(2 * q2).astype(np.int64)
        deviations = np.abs(2 * values - doubled_median[segment])
        (doubled_mad,), _ = _quantiles(segment, deviations, pairs, (0.5,))
        mad = doubled_mad / 2
    else:  # sizes beyond 4 TB: floats, sorted the slow way
        (mad,), _ = _quantiles(segment, np.abs(values - q2[segment]), pairs, (0.5,))
    spread = q3 - q1
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(spread > 0, (q1 + q3 - 2 * q2) / spread, 0.0)
        madm = np.where(mad == 0, 1.0, np.where(q2 > 0, np.maximum(0.0, (q2 - mad) / q2), 0.0))
    regular = np.where(size >= MIN_INTERVALS, (1 - np.abs(skew) + madm) / 2, 0.0)
    return regular, q2, mad


def _bin_regularity(bin_pair: np.ndarray, counts: np.ndarray, pairs: int) -> np.ndarray:
    """`1 - CV` of each pair's bin counts (0 for fewer than 2 bins or no events)."""
    bins = np.bincount(bin_pair, minlength=pairs)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.bincount(bin_pair, weights=counts, minlength=pairs) / bins
        deviation = (counts - mean[bin_pair]) ** 2
        std = np.sqrt(np.bincount(bin_pair, weights=deviation, minlength=pairs) / bins)
        regular = np.maximum(0.0, 1 - std / mean)
    return np.where((bins >= 2) & (mean > 0), regular, 0.0)


def _histogram_score(
    pair: np.ndarray, times: np.ndarray, median: np.ndarray, pairs: int
) -> np.ndarray:
    """`histogram_score` per pair (distinct times sorted by pair and time)."""
    if not len(times):
        return np.zeros(pairs)
    begins = np.flatnonzero(_segment_starts(pair))
    ends = np.r_[begins[1:], len(times)] - 1
    first = np.zeros(pairs)
    last = np.zeros(pairs)
    first[pair[begins]] = times[begins]
    last[pair[ends]] = times[ends]
    span = last - first
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.maximum(2 * median, np.minimum(3600.0, span / 8))
        bins = np.nan_to_num(span // width).astype(np.int64)
    bins[bins < MIN_BINS] = 0
    index = ((times - first[pair]) // width[pair]).astype(np.int64)
    whole = _binned_regularity(pair, index, bins, pairs)

    day = (times // 86_400).astype(np.int64)
    day_start = _segment_starts(pair) | np.r_[True, day[1:] != day[:-1]]
    day_id = np.cumsum(day_start) - 1
    day_begins = np.flatnonzero(day_start)
    day_ends = np.r_[day_begins[1:], len(times)] - 1
    day_pair = pair[day_begins]
    day_first = times[day_begins]
    day_bins = ((times[day_ends] - day_first) // width[day_pair]).astype(np.int64)
    day_bins[day_bins < MIN_BINS_PER_DAY] = 0
    local = ((times - day_first[day_id]) // width[pair]).astype(np.int64)
    # Each pair's days, whole bins only, laid end to end.
    total = np.bincount(day_pair, weights=day_bins, minlength=pairs).astype(np.int64)
    offset = np.r_[0, np.cumsum(day_bins)[:-1]]
    keep = local < day_bins[day_id]
    counts = np.bincount((offset[day_id] + local)[keep], minlength=int(day_bins.sum())).astype(
        np.float64
    )
    bin_pair = np.repeat(day_pair, day_bins)
    daily = np.where(total >= MIN_BINS, _bin_regularity(bin_pair, counts, pairs), 0.0)
    return np.maximum(whole, daily)


def _binned_regularity(
    pair: np.ndarray, index: np.ndarray, bins: np.ndarray, pairs: int
) -> np.ndarray:
    """Bin regularity of each pair's events over its first `bins[pair]` bins."""
    offset = np.r_[0, np.cumsum(bins)[:-1]]
    keep = index < bins[pair]
    counts = np.bincount((offset[pair] + index)[keep], minlength=int(bins.sum()))
    bin_pair = np.repeat(np.arange(pairs), bins)
    regular = _bin_regularity(bin_pair, counts.astype(np.float64), pairs)
    return np.where(bins >= MIN_BINS, regular, 0.0)


def _duration_score(
    pair: np.ndarray, times: np.ndarray, window: np.ndarray, pairs: int
) -> tuple[np.ndarray, np.ndarray]:
    """`duration_score` per pair: (duration score, share of hours active)."""
    if not len(times):
        return np.zeros(pairs), np.zeros(pairs)
    hour = (times // 3600).astype(np.int64)
    new_hour = _segment_starts(pair) | np.r_[True, hour[1:] != hour[:-1]]
    hour_pair, hour = pair[new_hour], hour[new_hour]
    first_of_pair = _segment_starts(hour_pair)
    run_start = first_of_pair | np.r_[True, hour[1:] != hour[:-1] + 1]
    run_lengths = np.diff(np.r_[np.flatnonzero(run_start), len(hour)])
    longest = np.zeros(pairs, dtype=np.int64)
    np.maximum.at(longest, hour_pair[run_start], run_lengths)
    hours = np.bincount(hour_pair, minlength=pairs)
    first_hour = np.zeros(pairs, dtype=np.int64)
    last_hour = np.zeros(pairs, dtype=np.int64)
    begins = np.flatnonzero(first_of_pair)
    ends = np.r_[begins[1:], len(hour)] - 1
    first_hour[hour_pair[begins]] = hour[begins]
    last_hour[hour_pair[ends]] = hour[ends]

    begins = np.flatnonzero(_segment_starts(pair))
    ends = np.r_[begins[1:], len(times)] - 1
    span = np.zeros(pairs)
    span[pair[begins]] = times[ends] - times[begins]
    with np.errstate(divide="ignore", invalid="ignore"):
        span_ratio = np.where(window > 0, np.minimum(1.0, span / window), 0.0)
        active = hours / (last_hour - first_hour + 1)
    duration = np.maximum(span_ratio, np.minimum(1.0, longest / 24))
    return duration, np.nan_to_num(active)


def _percent_beacon(interval_pair: np.ndarray, intervals: np.ndarray, pairs: int) -> np.ndarray:
    """`percent_beacon` per pair, from the intervals between distinct times."""
    deltas = np.round(intervals).astype(np.int64)
    counted = deltas > NOTEBOOK_MIN_DELTA_S
    segment, deltas = interval_pair[counted], deltas[counted]
    total = np.bincount(segment, minlength=pairs)
    if not len(deltas):
        return np.zeros(pairs)
    order = _order_within(segment, deltas)
    segment, deltas = segment[order], deltas[order]
    value_start = _segment_starts(segment) | np.r_[True, deltas[1:] != deltas[:-1]]
    starts = np.flatnonzero(value_start)
    counts = np.diff(np.r_[starts, len(deltas)])
    value_pair = segment[starts]
    # Counts of each distinct value summed over its ±NOTEBOOK_NEIGHBOURS neighbouring values of
    # the same pair (np.convolve "same" with a flat kernel).
    cumulative = np.r_[0, np.cumsum(counts)]
    pair_begin = np.flatnonzero(_segment_starts(value_pair))
    pair_end = np.r_[pair_begin[1:], len(counts)]
    which = np.cumsum(_segment_starts(value_pair)) - 1
    position = np.arange(len(counts))
    low = np.maximum(position - NOTEBOOK_NEIGHBOURS, pair_begin[which])
    high = np.minimum(position + NOTEBOOK_NEIGHBOURS + 1, pair_end[which])
    windowed = cumulative[high] - cumulative[low]
    best = np.zeros(pairs, dtype=np.int64)
    np.maximum.at(best, value_pair, windowed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, best / total * 100, 0.0)
