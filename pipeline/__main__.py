"""Command line helpers around the pipeline: `python -m pipeline show | demo-range | settings |
doctor`."""

import argparse
import datetime as dt
import sys

import pandas as pd

from pipeline.settings import SettingsError, load_settings, settings_table_markdown

SHOW_COLUMNS = [
    "risk_rank",
    "SourceIP",
    "DestinationIP",
    "DestinationPort",
    "Protocol",
    "kind",
    "score",
    "connections",
    "reasons",
]


def show(limit: int) -> int:
    """Print where the results are and the latest day's top candidates."""
    from pipeline.assets.candidates import read_day
    from pipeline.assets.enriched import TABLE
    from pipeline.assets.watchlist import FILE_NAME
    from pipeline.assets.watchlist import TABLE as WATCHLIST
    from pipeline.spark_jobs import lake

    settings = load_settings()
    day = lake.latest_day(settings.lake_url, TABLE)
    if day is None:
        print(f"No enriched_beacons in {settings.lake_url} yet: run `make demo` first.")
        return 1
    ranked = read_day(settings.lake_url, TABLE, day.isoformat())
    print(f"Lake: {settings.lake_url}")
    print(f"Watchlist CSV: {lake.day_url(settings.lake_url, WATCHLIST, day)}/{FILE_NAME}")
    print(f"Top candidates for {day} ({len(ranked)} reported):\n")
    if ranked.empty:
        print("(none)")
        return 0
    with pd.option_context("display.width", 250, "display.max_colwidth", 120):
        table = ranked.head(limit)[SHOW_COLUMNS].copy()
        table["score"] = table["score"].round(2)
        print(table.to_string(index=False))
    return 0


def demo_range(days: int) -> int:
    """The last `days` complete UTC days as Dagster's `--partition-range` argument."""
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    first = yesterday - dt.timedelta(days=days - 1)
    print(f"{first.isoformat()}...{yesterday.isoformat()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline")
    commands = parser.add_subparsers(dest="command", required=True)
    show_parser = commands.add_parser("show", help="print the latest day's top candidates")
    show_parser.add_argument("--limit", type=int, default=15)
    range_parser = commands.add_parser("demo-range", help="print the last N days as A...B")
    range_parser.add_argument("--days", type=int, default=21)
    commands.add_parser("settings", help="print the settings table (markdown)")
    commands.add_parser("doctor", help="check settings, storage, Spark and the Dagster instance")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from pipeline.doctor import main as doctor

        return doctor()
    try:
        if args.command == "show":
            return show(args.limit)
        if args.command == "demo-range":
            return demo_range(args.days)
        print(settings_table_markdown())
        return 0
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
