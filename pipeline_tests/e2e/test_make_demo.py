"""`make demo`, the README's first command, with its default settings on its own data.

Only the data folders are moved into a temporary directory; every detection and check setting is
the default a new user gets, and the days are the last complete ones before today, whatever today
is. The demo once failed because its first days' windows reached before the generated data.
"""

import datetime as dt
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pipeline.lake import Lake
from pipeline.settings import SPECS

REPO = Path(__file__).resolve().parents[2]
DEMO_DAYS = 3


@pytest.mark.slow
def test_make_demo_passes_every_blocking_check_with_the_default_settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SPECS}}
    lake_url = str(tmp_path / "lake")
    env.update(
        BEACON_LAKE_URL=lake_url,
        BEACON_EXPORT_URL=str(tmp_path / "export"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
    )
    done = subprocess.run(
        ["make", "--no-print-directory", "demo", f"DEMO_DAYS={DEMO_DAYS}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "DagsterAssetCheckFailedError" not in output

    # The days the demo ran are the ones it printed; a blocking check would have stopped each of
    # them before the watchlist.
    start, end = _demo_range(output)
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    assert len(days) == DEMO_DAYS
    assert end < dt.datetime.now(dt.UTC).date()
    for day in days:
        manifest = Lake(lake_url).read_manifest("beaconing_candidates", day)
        assert manifest is not None, day
        assert manifest["window_days_present"] == manifest["window_days"], manifest
        watchlist = Path(Lake(lake_url).day_url("sentinel_watchlist", day)) / "watchlist.csv"
        assert watchlist.exists(), day
    assert len(pd.read_csv(watchlist)) > 0
    assert f"Top candidates for {end}" in output


def _demo_range(output: str) -> tuple[dt.date, dt.date]:
    """The first and last day `make demo` said it runs."""
    match = re.search(r"demo: the last \d+ complete days, (\S+)\.\.\.(\S+),", output)
    assert match, "make demo did not say which days it runs"
    return dt.date.fromisoformat(match[1]), dt.date.fromisoformat(match[2])
