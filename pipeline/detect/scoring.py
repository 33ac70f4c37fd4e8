"""Beacon scoring of one (source, destination, port, protocol) pair over the lookback window.

Pure numpy, no Spark or Dagster: `score_pair` takes the pair's connection times and sizes and
returns its subscores, in the spirit of RITA v5 (activecm/rita, analysis/beacons.go; REFERENCE §7):

- timing: on the intervals between distinct connection times, the mean of
  `1 - |Bowley skew|` with Bowley skew `(Q1 + Q3 - 2·Q2) / (Q3 - Q1)` and `(median - MAD) / median`.
  Jitter that is symmetric or one-sided keeps the skew near 0, so jittered beacons still score high.
- size: the same two measures on bytes sent and on bytes received, apart, averaged.
- histogram: `1 - CV` of connection counts per bin, bins of an hour (less for a pair active a
  few hours only; never under 2 median intervals)
  over the pair's active span and over each day's active span (whole bins only; the better of
  the two): a timer fills every bin evenly, also one that sleeps at night; bursty human traffic
  does not.
- duration: `max(span / observed time, longest run of active hours / 24)`: a timer keeps going.
  The observed time is the span of the window that holds any traffic at all.

The score is the mean of the subscores (size left out when the firewall logs no bytes).
`beyond_chance` says whether the intervals are more regular than random arrivals would make
them, given how many there are (`pipeline.detect.chance`): a pair is reported only then.
`percent_beacon` is the notebook's metric done per pair: the largest share of intervals (> 15 s,
in whole seconds) that fall within ±2 neighbouring interval values.

This module is the reference: it scores one pair at a time and says what each score means. The
detector runs `pipeline.detect.batch_scoring`, which computes the same scores for every pair
of a batch at once (vectorised numpy) and is tested against this module
(pipeline_tests/unit/test_batch_scoring.py): change both together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.detect.chance import beyond_chance

MIN_INTERVALS = 3  # RITA needs 4 distinct timestamps
HISTOGRAM_EDGES_S = np.logspace(0, np.log10(86_400), 26)  # interval histogram for the UI
NOTEBOOK_MIN_DELTA_S = 15
NOTEBOOK_NEIGHBOURS = 2
# Human traffic comes in bursts of connections seconds apart; a timer rarely fires this fast.
BURST_GAP_S = 10.0
MIN_BURSTS = 12  # the burst-start view needs as many events as a pair needs connections
MIN_BINS = 4  # fewer histogram bins than this cannot show steadiness
# A day with fewer whole bins says nothing about steadiness (a few bursts a day fill one or two
# wide bins evenly).
MIN_BINS_PER_DAY = 3


@dataclass(frozen=True)
class PairScore:
    score: float
    timing_score: float
    size_score: float | None
    histogram_score: float
    duration_score: float
    median_interval_s: float
    interval_mad_s: float
    percent_beacon: float
    hours_active_ratio: float
    interval_histogram: list[int]
    view: str = "all"  # "all" connections, or "burst starts" (a timer inside bursty traffic)
    intervals: int = 0  # intervals between distinct connection times of the view
    beyond_chance: bool = False  # more regular than random arrivals (chance.py)


def regularity(values: np.ndarray) -> float:
    """RITA's regularity of a sample: mean of `1 - |Bowley skew|` and `(median - MAD)/median`."""
    if len(values) < MIN_INTERVALS:
        return 0.0
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    skew = (q1 + q3 - 2 * q2) / (q3 - q1) if q3 > q1 else 0.0
    mad = float(np.median(np.abs(values - q2)))
    # Half the values or more identical (e.g. every request 0 bytes) is perfectly consistent.
    madm = 1.0 if mad == 0 else (max(0.0, (q2 - mad) / q2) if q2 > 0 else 0.0)
    return float((1 - abs(skew) + madm) / 2)


def _bin_regularity(counts: np.ndarray) -> float:
    if len(counts) < 2 or counts.mean() == 0:
        return 0.0
    return float(max(0.0, 1 - counts.std() / counts.mean()))


def histogram_score(times_s: np.ndarray, median_interval_s: float) -> float:
    """`1 - CV` of counts per bin of about an hour (at least 2 intervals), whole bins only.

    Judged over the pair's whole active span, and over each day's active span alone (so an
    implant that sleeps every night, working hours only, is judged on the hours it works);
    the better of the two counts.
    """
    # Hourly bins, narrower for a pair active only a few hours (a short burst of check-ins),
    # never narrower than two intervals.
    span = times_s[-1] - times_s[0]
    width = max(2 * median_interval_s, min(3600.0, span / 8))
    # Whole bins only: a partly covered last bin would look like a drop in activity.
    bins = int(span // width)
    index = ((times_s - times_s[0]) // width).astype(np.int64)
    whole = (
        _bin_regularity(np.bincount(index[index < bins], minlength=bins))
        if bins >= MIN_BINS
        else 0.0
    )

    day = (times_s // 86_400).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(day) != 0])
    per_day = np.diff(np.r_[starts, len(times_s)])
    first = np.repeat(times_s[starts], per_day)
    last = np.repeat(times_s[starts + per_day - 1], per_day)
    day_bins = ((last - first) // width).astype(np.int64)  # whole bins of each event's day
    day_bins[day_bins < MIN_BINS_PER_DAY] = 0
    local = ((times_s - first) // width).astype(np.int64)
    offset = np.repeat(np.cumsum(np.r_[0, day_bins[starts]])[:-1], per_day)
    total = int(day_bins[starts].sum())
    keep = local < day_bins
    daily = (
        _bin_regularity(np.bincount((offset + local)[keep], minlength=total))
        if total >= MIN_BINS
        else 0.0
    )
    return max(whole, daily)


def duration_score(times_s: np.ndarray, window_s: float) -> tuple[float, float]:
    """(duration score, share of hours active between first and last connection)."""
    hours = np.unique((times_s // 3600).astype(np.int64))
    span_hours = hours[-1] - hours[0] + 1
    runs = np.split(hours, np.flatnonzero(np.diff(hours) != 1) + 1)
    longest = max(len(r) for r in runs)
    span_ratio = min(1.0, (times_s[-1] - times_s[0]) / window_s) if window_s > 0 else 0.0
    return float(max(span_ratio, min(1.0, longest / 24))), float(len(hours) / span_hours)


def percent_beacon(times_s: np.ndarray) -> float:
    """The notebook's Percentbeacon, computed per pair and with a correct denominator."""
    deltas = np.round(np.diff(times_s)).astype(np.int64)
    deltas = deltas[deltas > NOTEBOOK_MIN_DELTA_S]
    if len(deltas) == 0:
        return 0.0
    _, counts = np.unique(deltas, return_counts=True)
    kernel = np.ones(2 * NOTEBOOK_NEIGHBOURS + 1)
    windowed = np.convolve(counts, kernel, mode="same")
    return float(windowed.max() / len(deltas) * 100)


def _score_view(
    times_s: np.ndarray, sent: np.ndarray, received: np.ndarray, window_s: float, view: str
) -> PairScore | None:
    distinct, first = np.unique(times_s, return_index=True)
    if len(distinct) < MIN_INTERVALS + 1:
        return None
    intervals = np.diff(distinct)
    median = float(np.median(intervals))
    mad = float(np.median(np.abs(intervals - median)))
    timing = regularity(intervals)
    sizes = [regularity(s[s >= 0]) for s in (sent[first], received[first]) if (s >= 0).sum() >= 4]
    size = float(np.mean(sizes)) if sizes else None
    histogram = histogram_score(distinct, median)
    duration, hours_active = duration_score(distinct, window_s)
    parts = [timing, histogram, duration] + ([size] if size is not None else [])
    counts, _ = np.histogram(np.clip(intervals, 1, 86_400), bins=HISTOGRAM_EDGES_S)
    return PairScore(
        score=float(np.mean(parts)),
        timing_score=timing,
        size_score=size,
        histogram_score=histogram,
        duration_score=duration,
        median_interval_s=median,
        interval_mad_s=mad,
        percent_beacon=percent_beacon(distinct),
        hours_active_ratio=hours_active,
        interval_histogram=counts.astype(int).tolist(),
        view=view,
        intervals=len(intervals),
        beyond_chance=bool(beyond_chance(median, mad, len(intervals))),
    )


def session_starts(times_s: np.ndarray, gap_s: float = BURST_GAP_S) -> np.ndarray:
    """Indices of the first event of each run of events less than `gap_s` apart (sorted input)."""
    return np.flatnonzero(np.r_[True, np.diff(times_s) >= gap_s])


def score_pair(
    times_s: np.ndarray,
    sent_bytes: np.ndarray,
    received_bytes: np.ndarray,
    window_s: float,
) -> PairScore | None:
    """Score one pair; None when it has too few distinct connection times to judge.

    Two views are scored and the better kept: every connection, and only the first connection
    of each burst (runs less than `BURST_GAP_S` apart). The second finds a timer hidden in
    bursty human traffic on the same pair (C2 behind a CDN address its host also browses).
    """
    order = np.argsort(times_s, kind="stable")
    times_s = np.asarray(times_s, dtype=np.float64)[order]
    sent_bytes = np.asarray(sent_bytes, dtype=np.float64)[order]
    received_bytes = np.asarray(received_bytes, dtype=np.float64)[order]
    every = _score_view(times_s, sent_bytes, received_bytes, window_s, "all")
    starts = session_starts(times_s)
    if every is None or len(starts) == len(times_s) or len(starts) < MIN_BURSTS:
        return every
    bursts = _score_view(
        times_s[starts], sent_bytes[starts], received_bytes[starts], window_s, "burst starts"
    )
    return bursts if bursts is not None and bursts.score > every.score + 0.05 else every


def human_interval(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(
    result: PairScore,
    *,
    days_seen: int,
    window_days: int,
    first_seen_age_days: int,
    internal_sources_to_destination: int,
    internal_sources: int,
) -> str:
    """The analyst-facing reasons a pair was reported, in one line."""
    spread = result.interval_mad_s / result.median_interval_s if result.median_interval_s else 0.0
    parts = [
        f"interval {human_interval(result.median_interval_s)} ± {spread:.0%} "
        f"over {result.intervals:,} intervals",
        f"{result.hours_active_ratio:.0%} of hours active",
        f"seen {days_seen} of {window_days} days",
        "first seen today"
        if first_seen_age_days == 0
        else f"first seen {first_seen_age_days} days ago",
        f"{internal_sources_to_destination} of {internal_sources} internal hosts reach it",
    ]
    if result.size_score is not None and result.size_score >= 0.8:
        parts.append("consistent sizes")
    if result.view == "burst starts":
        parts.append("a timer inside bursty traffic on the same pair")
    return ", ".join(parts)
