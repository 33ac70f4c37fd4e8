"""The operator's day in the Dagster UI, in a real browser (Debian's Chromium, via Playwright).

`dagster dev -w workspace.yaml` runs on a free loopback port against a temporary DAGSTER_HOME and
a temporary lake and export folder. The test writes the sample days into the export folder in
the hourly layout (24 blobs a day: local Spark pays per file) and runs in export mode; by hand,
sample mode generates the days in the run, in the 5-minute layout. The browser opens the asset
graph, launches a range backfill from the partitions dialog, waits for it (GraphQL polling),
opens the candidates asset page (table and plot) and the automation page (schedule).
Screenshots go to a temporary folder.

Run by hand, it also measures a longer backfill and refreshes the README's screenshots:

    .venv/bin/python -m pipeline_tests.e2e.test_ui_browser --days 30 \
        --docs pipeline_tests/e2e/screenshots
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, sync_playwright

from pipeline.ingest.sample import write_export_day

ROOT = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).with_name("dagster")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ASSETS = (
    "commonsecuritylog_export",
    "network_sessions",
    "pair_daily_stats",
    "beaconing_candidates",
    "enriched_beacons",
    "sentinel_watchlist",
)
BACKFILL_DAYS = 3
# Upper bounds of the waits (a wait that runs out fails the test; nothing asserts a duration).
SERVER_START_S = 120
BACKFILL_S_PER_DAY = 60
BACKFILL_S_FIXED = 150
UI_WAIT_MS = 30_000
# Wide enough for the asset graph to draw full nodes (names, checks, kinds) when fitted.
VIEWPORT = {"width": 1920, "height": 1000}
DOCS_WIDTH = 1400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def partition_days(days: int) -> tuple[dt.date, dt.date]:
    """The last `days` complete UTC days: the start date is the first of them."""
    last = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    return last - dt.timedelta(days=days - 1), last


@dataclass
class DagsterUI:
    """A `dagster dev` process in its own process group, and how to talk to it."""

    url: str
    process: subprocess.Popen
    log_path: Path

    @classmethod
    @contextlib.contextmanager
    def running(cls, workdir: Path, start_date: dt.date, source: str) -> Iterator[DagsterUI]:
        home = workdir / "dagster_home"
        home.mkdir(parents=True)
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "BEACON_SOURCE": source,
            "BEACON_LAKE_URL": str(workdir / "lake"),
            "BEACON_EXPORT_URL": str(workdir / "export"),
            "BEACON_START_DATE": start_date.isoformat(),
            "BEACON_SPARK_MASTER": "local[2]",
        }
        port = free_port()
        log_path = workdir / "dagster-dev.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # `dagster dev` in the background ignores SIGTERM to itself: stop its whole group.
                start_new_session=True,
            )
        ui = cls(f"http://127.0.0.1:{port}", process, log_path)
        try:
            ui.wait_until_loaded()
            yield ui
        finally:
            ui.stop()

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
                return

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        assert "errors" not in answer, answer
        return answer["data"]

    def wait_until_loaded(self) -> None:
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited:\n{self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                entries = self.graphql(query)["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    return
            time.sleep(1)
        raise TimeoutError(f"dagster dev did not load in {SERVER_START_S} s:\n{self.log_tail()}")

    def wait_for_backfill(self, backfill_id: str, timeout_s: float) -> dict[str, Any]:
        """Poll until the backfill is done; returns its status and its runs' statuses."""
        query = """
        query ($id: String!) {
          partitionBackfillOrError(backfillId: $id) {
            ... on PartitionBackfill { id status numPartitions runs(limit: 100) { runId status } }
            ... on PythonError { message }
          }
        }"""
        done = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
        deadline = time.monotonic() + timeout_s
        backfill: dict[str, Any] = {}
        while time.monotonic() < deadline:
            backfill = self.graphql(query, {"id": backfill_id})["partitionBackfillOrError"]
            runs = backfill.get("runs") or []
            runs_done = runs and all(
                r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs
            )
            if backfill.get("status") in done and runs_done:
                return backfill
            time.sleep(3)
        raise TimeoutError(f"backfill {backfill_id} not done in {timeout_s} s: {backfill}")


def visible(page: Page, text: str) -> Locator:
    """The first visible element whose whole text is `text` (the UI keeps hidden copies)."""
    return page.locator(f"text={json.dumps(text)} >> visible=true").first


class Tour:
    """The operator's steps in the browser; each one leaves a screenshot behind."""

    def __init__(self, ui: DagsterUI, page: Page, shots: Path) -> None:
        self.ui, self.page, self.shots = ui, page, shots
        page.set_default_timeout(UI_WAIT_MS)

    def shoot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def open_lineage(self) -> list[str]:
        """The global asset graph with every group expanded; returns the asset names shown."""
        page = self.page
        page.goto(f"{self.ui.url}/asset-groups")
        page.get_by_text("Materialize all…").wait_for()
        visible(page, "publish").wait_for()
        # More room for the graph: hide the navigation and the asset tree beside the graph.
        page.get_by_text("Hide navigation").click()
        tree = page.get_by_placeholder("Jump to…").bounding_box()
        assert tree is not None
        page.mouse.click(tree["x"] + tree["width"] + 22, tree["y"] + tree["height"] / 2)
        page.get_by_placeholder("Jump to…").wait_for(state="hidden")
        page.mouse.click(VIEWPORT["width"] - 300, 200, button="right")
        page.get_by_role("menuitem", name="Expand all groups").click()
        for name in ASSETS:
            visible(page, name).wait_for()
        self.shoot("asset-graph")
        return [n for n in ASSETS if visible(page, n).count() > 0]

    def launch_range_backfill(self, first: dt.date, last: dt.date) -> str:
        """Materialize all… → a partition range → Launch backfill; returns the backfill id."""
        page = self.page
        page.goto(f"{self.ui.url}/asset-groups")
        page.get_by_text("Materialize all…").click()
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        selection = dialog.get_by_placeholder("No matching partitions")
        selection.fill(f"[{first.isoformat()}...{last.isoformat()}]")
        selection.press("Enter")
        days = (last - first).days + 1
        dialog.get_by_text(f"{days} partitions", exact=True).wait_for()
        self.shoot("backfill-dialog")
        dialog.get_by_role("button", name="Launch backfill").click()
        created = page.get_by_text("Created backfill")
        created.wait_for()
        return created.inner_text().split("Created backfill", 1)[1].split()[0]

    def open_backfill(self, backfill_id: str) -> dict[str, Any]:
        """The backfill's page: its status tag and, per asset, the partitions that succeeded."""
        page = self.page
        page.goto(f"{self.ui.url}/runs/b/{backfill_id}")
        page.get_by_text("100% completed").first.wait_for()
        self.shoot("backfill-done")
        return {
            "text": page.inner_text("body"),
            "complete_assets": page.get_by_text("100% completed").count(),
            # The column header says "Succeeded" too: the status tag is a second one.
            "succeeded_labels": page.get_by_text("Succeeded", exact=True).count(),
        }

    def open_candidates(self, day: dt.date) -> dict[str, Any]:
        """The beaconing_candidates asset page: its columns, top-candidates table and plot."""
        page = self.page
        page.goto(f"{self.ui.url}/assets/beaconing_candidates?view=events")
        page.get_by_text(f"top_candidates_{day.isoformat()}", exact=True).first.wait_for()
        self.shoot("candidates-events")
        text = page.inner_text("body")
        # The picture is a large markdown value: the UI shows it behind a button, in a dialog.
        page.locator("tr", has_text=f"plot_{day.isoformat()}").get_by_text(
            "[Show Markdown]"
        ).click()
        plot = page.get_by_role("dialog").locator('img[src^="data:image/png"]')
        plot.wait_for()
        page.wait_for_function(
            "() => [...document.images].some(i => i.src.startsWith('data:') && i.naturalWidth)"
        )
        width = plot.evaluate("img => img.naturalWidth")
        self.shoot("candidates-plot")
        page.get_by_role("dialog").screenshot(path=str(self.shots / "candidates-plot-dialog.png"))
        page.keyboard.press("Escape")
        page.goto(f"{self.ui.url}/assets/beaconing_candidates")
        page.get_by_text("interval_histogram", exact=True).first.wait_for()
        self.shoot("candidates-overview")
        return {"events": text, "overview": page.inner_text("body"), "plot_width": width}

    def open_automation(self) -> str:
        self.page.goto(f"{self.ui.url}/automation")
        self.page.get_by_text("daily_beaconing_schedule").first.wait_for()
        self.shoot("automation")
        return self.page.inner_text("body")


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


# --- the test -------------------------------------------------------------------------------


def new_page(browser: Browser) -> Page:
    """A page whose clock is this process's: the UI's date pickers and the server (whose
    partitions end yesterday) then agree on what yesterday is, under CI's moved clock too."""
    page = browser.new_page(viewport=VIEWPORT)
    page.clock.set_system_time(dt.datetime.now(dt.UTC))
    return page


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    workdir = tmp_path_factory.mktemp("ui")
    shots = workdir / "screenshots"
    shots.mkdir()
    first, last = partition_days(BACKFILL_DAYS)
    for i in range((last - first).days + 1):
        write_export_day(workdir / "export", first + dt.timedelta(days=i), layout="hourly")
    with DagsterUI.running(workdir, first, "export") as ui, chromium() as browser:
        page = new_page(browser)
        yield Tour(ui, page, shots)
        page.close()


@pytest.fixture(scope="module")
def backfill(tour: Tour) -> dict[str, Any]:
    first, last = partition_days(BACKFILL_DAYS)
    backfill_id = tour.launch_range_backfill(first, last)
    timeout = BACKFILL_S_FIXED + BACKFILL_S_PER_DAY * BACKFILL_DAYS
    return tour.ui.wait_for_backfill(backfill_id, timeout)


def test_the_asset_graph_shows_all_six_assets(tour: Tour):
    assert tour.open_lineage() == list(ASSETS)


def test_a_range_backfill_from_the_partitions_dialog_succeeds(tour: Tour, backfill: dict):
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), tour.ui.log_tail()
    assert backfill["numPartitions"] == BACKFILL_DAYS
    # Single-run backfill policy: the whole range is one run, and it succeeded.
    assert [r["status"] for r in backfill["runs"]] == ["SUCCESS"]
    _, last = partition_days(BACKFILL_DAYS)
    page = tour.open_backfill(backfill["id"])
    assert page["complete_assets"] == len(ASSETS)
    assert page["succeeded_labels"] == 2
    assert last.isoformat() in page["text"]


def test_the_candidates_page_shows_the_table_and_the_plot(tour: Tour, backfill: dict):
    _, last = partition_days(BACKFILL_DAYS)
    seen = tour.open_candidates(last)
    assert f"top_candidates_{last.isoformat()}" in seen["events"]
    # The sample's Cobalt Strike beacon is in the top candidates table.
    assert "203.0.113.50" in seen["events"]
    assert seen["plot_width"] > 0
    assert "interval_histogram" in seen["overview"]


def test_the_schedule_and_sensors_are_listed(tour: Tour):
    page = tour.open_automation()
    for name in (
        "daily_beaconing_schedule",
        "late_export_sensor",
        "run_failure_notifier",
        "freshness_checks_sensor",
    ):
        assert name in page
    assert list(tour.shots.glob("*.png"))


# --- by hand: a longer backfill, and the README's screenshots --------------------------------


def save_docs_screenshot(source: Path, target: Path) -> int:
    """A palette PNG of a screenshot (small enough to commit); returns its size in bytes."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    if image.width > DOCS_WIDTH:
        height = round(image.height * DOCS_WIDTH / image.width)
        image = image.resize((DOCS_WIDTH, height), Image.Resampling.LANCZOS)
    image = image.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    target.write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30, help="days in the backfill")
    parser.add_argument("--docs", type=Path, help="write the README screenshots here")
    args = parser.parse_args(argv)
    first, last = partition_days(args.days)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        shots = workdir / "screenshots"
        shots.mkdir()
        with DagsterUI.running(workdir, first, "sample") as ui, chromium() as browser:
            tour = Tour(ui, new_page(browser), shots)
            tour.open_lineage()
            started = time.monotonic()
            backfill_id = tour.launch_range_backfill(first, last)
            timeout = BACKFILL_S_FIXED + BACKFILL_S_PER_DAY * args.days
            backfill = ui.wait_for_backfill(backfill_id, timeout)
            elapsed = time.monotonic() - started
            print(f"backfill {first}...{last} ({args.days} days): {backfill['status']}, runs ")
            print(f"  {[r['status'] for r in backfill['runs']]}, {elapsed:.0f} s from launch")
            tour.open_backfill(backfill_id)
            tour.open_candidates(last)
            tour.open_automation()
            if args.docs:
                args.docs.mkdir(parents=True, exist_ok=True)
                for name in ("asset-graph", "candidates-plot", "backfill-done"):
                    size = save_docs_screenshot(shots / f"{name}.png", args.docs / f"ui-{name}.png")
                    print(f"  {args.docs}/ui-{name}.png: {size} bytes")
    return 0 if backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS") else 1


if __name__ == "__main__":
    sys.exit(main())
