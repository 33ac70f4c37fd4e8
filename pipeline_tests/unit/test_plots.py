"""The candidates picture: drawn headless from the candidates table and pair_daily_stats."""

import datetime as dt
import io

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.detect import plots
from pipeline.detect.scoring import HISTOGRAM_EDGES_S
from pipeline.lake import Lake

DAY = dt.date(2026, 11, 20)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def candidate(src: str, dst: str, port: int, period_s: float, score: float, kind="beacon"):
    rng = np.random.default_rng(port)
    intervals = np.clip(rng.normal(period_s, period_s * 0.1, 400), 1, None)
    counts, _ = np.histogram(intervals, bins=HISTOGRAM_EDGES_S)
    return {
        "SourceIP": src,
        "DestinationIP": dst,
        "DestinationPort": port,
        "Protocol": "TCP",
        "kind": kind,
        "score": score,
        "interval_histogram": counts.tolist() if kind == "beacon" else None,
    }


def candidates() -> pd.DataFrame:
    return pd.DataFrame(
        [
            candidate("10.0.0.23", "203.0.113.50", 443, 60, 0.91),
            candidate("10.0.0.31", "198.51.100.77", 8443, 300, 0.88),
            candidate("10.0.0.9", "198.51.100.9", 53, 1, 1.0, kind="strobe"),
        ]
    )


def write_stats_day(lake_url: str, day: dt.date, rows: list[dict]) -> None:
    Lake(lake_url).write_day_file("pair_daily_stats", day, "part-0.parquet", pd.DataFrame(rows))
    Lake(lake_url).write_manifest("pair_daily_stats", day, {"rows": len(rows)})


def stats_row(src: str, dst: str, port: int, event_ms: list[int]) -> dict:
    return {
        "SourceIP": src,
        "DestinationIP": dst,
        "DestinationPort": port,
        "Protocol": "TCP",
        "connections": len(event_ms),
        "event_ms": event_ms,
    }


def test_top_beacons_leave_out_strobes_and_keep_the_best_first():
    top = plots.top_beacons(candidates(), limit=5)
    assert list(top["DestinationIP"]) == ["203.0.113.50", "198.51.100.77"]
    assert list(plots.top_beacons(candidates(), limit=1)["DestinationIP"]) == ["203.0.113.50"]


def test_timelines_come_from_pair_daily_stats_of_the_last_days(tmp_path):
    lake_url = str(tmp_path / "lake")
    previous = DAY - dt.timedelta(days=1)
    write_stats_day(
        lake_url,
        DAY,
        [
            stats_row("10.0.0.23", "203.0.113.50", 443, [0, 60_000, 120_000]),
            stats_row("10.0.0.23", "192.0.2.1", 443, [5]),  # same source, not a top pair
        ],
    )
    write_stats_day(lake_url, previous, [stats_row("10.0.0.23", "203.0.113.50", 443, [1_000])])
    top = plots.top_beacons(candidates())
    timelines = plots.read_timelines(lake_url, top, [DAY, previous, previous - dt.timedelta(1)])
    midnight = dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp()
    cobalt = sorted(timelines["10.0.0.23 → 203.0.113.50:443"])
    assert cobalt == [midnight - 86_400 + 1.0, midnight, midnight + 60, midnight + 120]
    assert len(timelines["10.0.0.31 → 198.51.100.77:8443"]) == 0
    assert "10.0.0.23 → 192.0.2.1:443" not in timelines


def test_the_day_png_is_written_to_the_lake_and_decodes(tmp_path):
    lake_url = str(tmp_path / "lake")
    write_stats_day(lake_url, DAY, [stats_row("10.0.0.23", "203.0.113.50", 443, [0, 60_000])])
    url, png = plots.plot_day(lake_url, DAY, candidates())
    assert url == f"{lake_url}/reports/beaconing_candidates/date=2026-11-20/top_candidates.png"
    with open(url, "rb") as handle:
        assert handle.read() == png
    assert png.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(png))
    assert image.size == (880, 336)
    # Something was drawn: far more than the two or three colours of an empty figure.
    assert len(set(image.convert("RGB").getdata())) > 20
    assert len(png) < 150_000


def test_a_day_without_beacons_still_gets_a_picture(tmp_path):
    _, png = plots.plot_day(str(tmp_path / "lake"), DAY, pd.DataFrame())
    assert png.startswith(PNG_MAGIC)


def test_the_inline_image_is_markdown_with_a_data_url():
    text = plots.markdown_image(PNG_MAGIC + b"rest", "top candidates")
    assert text.startswith("![top candidates](data:image/png;base64,iVBORw0KGg")
    assert text.endswith(")")
