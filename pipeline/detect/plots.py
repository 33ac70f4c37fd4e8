"""Pictures of a candidates day an analyst reads in the Dagster UI: interval histograms, timeline.

One PNG per day: on the left the interval histogram of each top candidate (counts over the
log-spaced bins `HISTOGRAM_EDGES_S` the scorer fills), on the right the connections of the same
pairs over the last days of the window (from `pair_daily_stats.event_ms`). Rendered headless
with matplotlib's Agg backend; small tables only (a few pairs, a few days), read with pyarrow.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")

from matplotlib import pyplot as plt

from pipeline.detect.scoring import HISTOGRAM_EDGES_S
from pipeline.lake import Lake

PLOTS_TABLE = "reports/beaconing_candidates"
PLOT_NAME = "top_candidates.png"
TOP_PAIRS = 6
TIMELINE_DAYS = 3
PAIR_COLUMNS = ["SourceIP", "DestinationIP", "DestinationPort", "Protocol"]


def pair_label(row: Mapping[str, object]) -> str:
    return f"{row['SourceIP']} → {row['DestinationIP']}:{row['DestinationPort']}"


def top_beacons(candidates: pd.DataFrame, limit: int = TOP_PAIRS) -> pd.DataFrame:
    """The highest-scored beacons (strobes have no intervals to draw)."""
    if candidates.empty:
        return candidates
    beacons = candidates[candidates["kind"] == "beacon"]
    beacons = beacons[beacons["interval_histogram"].notna()]
    return beacons.sort_values("score", ascending=False, kind="stable").head(limit)


def read_timelines(
    lake_url: str, pairs: pd.DataFrame, days: Sequence[dt.date]
) -> dict[str, np.ndarray]:
    """Connection times (epoch seconds) of each pair over `days`, from pair_daily_stats."""
    found: dict[str, list[np.ndarray]] = {pair_label(p): [] for p in pairs.to_dict("records")}
    if pairs.empty:
        return {}
    wanted = {tuple(p) for p in pairs[PAIR_COLUMNS].itertuples(index=False)}
    sources = sorted({p[0] for p in wanted})
    lake = Lake(lake_url)
    for day in days:
        table = lake.read_day_columns(
            "pair_daily_stats",
            day,
            columns=[*PAIR_COLUMNS, "event_ms"],
            filters=[("SourceIP", "in", sources)],
        )
        if table is None:
            continue
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
        for row in table.to_dict("records"):
            key = tuple(row[c] for c in PAIR_COLUMNS)
            if key in wanted and row["event_ms"] is not None:
                label = pair_label(row)
                found[label].append(midnight + np.asarray(row["event_ms"], dtype=float) / 1000)
    return {k: np.concatenate(v) if v else np.array([]) for k, v in found.items()}


def candidates_png(
    day: dt.date,
    top: pd.DataFrame,
    timelines: Mapping[str, np.ndarray],
    timeline_days: int = TIMELINE_DAYS,
) -> bytes:
    """The day's picture as PNG bytes (a short note instead of axes when nothing was reported)."""
    figure, (hist_ax, time_ax) = plt.subplots(
        1, 2, figsize=(11, 4.2), dpi=80, gridspec_kw={"width_ratios": [1, 1.4]}
    )
    try:
        figure.suptitle(f"beaconing_candidates {day.isoformat()}: top {len(top)} beacon(s)")
        if top.empty:
            for ax in (hist_ax, time_ax):
                ax.axis("off")
            hist_ax.text(0.5, 0.5, "no beacons reported this day", ha="center", va="center")
        else:
            _histograms(hist_ax, top)
            _timeline(time_ax, day, top, timelines, timeline_days)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def _colors(count: int) -> list:
    palette = plt.get_cmap("tab10")
    return [palette(i % 10) for i in range(count)]


def _histograms(ax: plt.Axes, top: pd.DataFrame) -> None:
    edges = np.asarray(HISTOGRAM_EDGES_S)
    for color, row in zip(_colors(len(top)), top.to_dict("records"), strict=True):
        counts = np.asarray(row["interval_histogram"], dtype=float)
        share = counts / counts.sum() if counts.sum() else counts
        ax.stairs(share, edges, color=color, linewidth=1.6, label=f"{pair_label(row)}")
    ax.set_xscale("log")
    ax.set_xticks([1, 60, 3600, 86_400], ["1 s", "1 min", "1 h", "1 d"])
    ax.set_xlabel("interval between connections")
    ax.set_ylabel("share of intervals")
    ax.set_ylim(0, 1.5)  # headroom: the legend sits above the bars, not on them
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    ax.set_title("interval histograms", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")


def _timeline(
    ax: plt.Axes,
    day: dt.date,
    top: pd.DataFrame,
    timelines: Mapping[str, np.ndarray],
    timeline_days: int,
) -> None:
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).timestamp()
    start = end - timeline_days * 86_400
    labels = [pair_label(r) for r in top.to_dict("records")]
    for i, (color, label) in enumerate(zip(_colors(len(labels)), labels, strict=True)):
        times = timelines.get(label, np.array([]))
        times = times[(times >= start) & (times < end)]
        hours = (times - start) / 3600
        ax.eventplot([hours], lineoffsets=[i], linelengths=0.7, linewidths=0.5, colors=[color])
    ax.set_yticks(range(len(labels)), [label.split(" → ")[1] for label in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, timeline_days * 24)
    first = day - dt.timedelta(days=timeline_days - 1)
    ax.set_xticks(
        [24 * i for i in range(timeline_days + 1)],
        [(first + dt.timedelta(days=i)).strftime("%m-%d") for i in range(timeline_days + 1)],
    )
    ax.set_xlabel("UTC day")
    ax.set_title(f"connections, last {timeline_days} days", fontsize=10)


def write_png(lake_url: str, day: dt.date, png: bytes) -> str:
    """Replace the day's PNG in the lake (written aside, then moved); returns its URL."""
    return Lake(lake_url).write_day_file(PLOTS_TABLE, day, PLOT_NAME, png)


def plot_day(lake_url: str, day: dt.date, candidates: pd.DataFrame) -> tuple[str, bytes]:
    """Draw and store the day's picture; returns (its lake URL, the PNG bytes)."""
    top = top_beacons(candidates)
    days = [day - dt.timedelta(days=i) for i in range(TIMELINE_DAYS)]
    png = candidates_png(day, top, read_timelines(lake_url, top, days))
    return write_png(lake_url, day, png), png


def markdown_image(png: bytes, alt: str) -> str:
    """An inline image the UI's markdown renders without reaching the lake."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
