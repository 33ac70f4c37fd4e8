"""Command line helpers around the pipeline: `python -m pipeline show | demo-range | settings |
doctor | spark-server`."""

import argparse
import datetime as dt
import os
import sys

import pandas as pd

from pipeline.settings import SettingsError, load_settings, settings_table_markdown

SHOW_COLUMNS = [
    "risk_rank",
    "SourceIP",
    "DestinationIP",
    "DestinationPort",
    "Protocol",
    "destination_hostname",
    "kind",
    "score",
    "connections",
    "reasons",
]


def show(limit: int) -> int:
    """Print where the results are and the latest day's top candidates."""
    from pipeline.enrich.assets import TABLE
    from pipeline.publish.assets import FILE_NAME
    from pipeline.publish.assets import TABLE as WATCHLIST

    settings = load_settings()
    lake = settings.lake
    day = lake.latest_day(TABLE)
    if day is None:
        print(f"No enriched_beacons in {settings.lake_url} yet: run `make demo` first.")
        return 1
    ranked = lake.read_day(TABLE, day.isoformat())
    print(f"Lake: {settings.lake_url}")
    print(f"Watchlist CSV: {lake.day_url(WATCHLIST, day)}/{FILE_NAME}")
    print(f"Top candidates for {day} ({len(ranked)} reported):\n")
    if ranked.empty:
        print("(none)")
        return 0
    with pd.option_context("display.width", 250, "display.max_colwidth", 120):
        table = ranked.head(limit)[SHOW_COLUMNS].copy()
        table["score"] = table["score"].round(2)
        table["destination_hostname"] = table["destination_hostname"].fillna("")  # not <NA>
        print(table.to_string(index=False))
    return 0


# A demo run again weeks later catches up the days since the last one (every window stays
# whole); beyond this many days that would take long, so it asks for a fresh start instead.
DEMO_CATCH_UP_MAX_DAYS = 60


class DemoRangeError(Exception):
    pass


def demo_days(yesterday: dt.date, days: int, lake_last: dt.date | None) -> tuple[dt.date, dt.date]:
    """The demo's first and last day: the last `days` complete days, reaching back to the day
    after `lake_last` (the previous demo's last day) when there is a hole in between."""
    first = yesterday - dt.timedelta(days=days - 1)
    if lake_last is None or lake_last >= first - dt.timedelta(days=1):
        return first, yesterday
    since = lake_last + dt.timedelta(days=1)
    if (first - since).days > DEMO_CATCH_UP_MAX_DAYS:
        raise DemoRangeError(
            f"The demo's lake ends on {lake_last}, {(yesterday - lake_last).days} days ago; "
            f"catching up more than {DEMO_CATCH_UP_MAX_DAYS} days would take long, and "
            "skipping them would leave a hole in every window. Start the demo afresh with "
            "`make clean` (it removes ./.data), then `make demo`."
        )
    return since, yesterday


def demo_range(days: int) -> int:
    """Print the demo's days as Dagster's `--partition-range` argument (A...B)."""
    settings = load_settings()
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    # Window coverage is counted on pair_daily_stats, so that is where a hole would show.
    lake_last = settings.lake.latest_day("pair_daily_stats")
    try:
        first, last = demo_days(yesterday, days, lake_last)
    except DemoRangeError as error:
        print(error, file=sys.stderr)
        return 1
    if (last - first).days + 1 > days:
        print(
            f"demo: the lake's last day is {lake_last}; these days also run the "
            f"{(last - first).days + 1 - days} day(s) since then, so no window has a hole",
            file=sys.stderr,
        )
    print(f"{first.isoformat()}...{last.isoformat()}")
    return 0


def spark_server(master: str, port: int) -> int:
    """Replace this process with a Spark Connect server on this machine (foreground)."""
    from pipeline.resources.spark import connect_server_command, require_java

    require_java()
    command = connect_server_command(load_settings(), master, port)
    print(
        f"Spark Connect server ({master}) on sc://localhost:{port}; Ctrl-C stops it. Daily runs "
        f"use it with BEACON_SPARK=cluster BEACON_SPARK_MASTER=sc://localhost:{port}",
        flush=True,
    )
    # Its Python workers run the jobs' pandas functions: this interpreter has pandas and numpy.
    os.execve(command[0], command, {**os.environ, "PYSPARK_PYTHON": sys.executable})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline")
    commands = parser.add_subparsers(dest="command", required=True)
    show_parser = commands.add_parser("show", help="print the latest day's top candidates")
    show_parser.add_argument("--limit", type=int, default=15)
    range_parser = commands.add_parser("demo-range", help="print the last N days as A...B")
    range_parser.add_argument("--days", type=int, default=21)
    commands.add_parser("settings", help="print the settings table (markdown)")
    commands.add_parser("doctor", help="check settings, storage, Spark and the Dagster instance")
    server_parser = commands.add_parser(
        "spark-server", help="run a Spark Connect server here that daily runs connect to"
    )
    server_parser.add_argument("--master", default="local[*,4]")
    server_parser.add_argument("--port", type=int, default=15002)
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from pipeline.doctor import main as doctor

        return doctor()
    try:
        if args.command == "show":
            return show(args.limit)
        if args.command == "demo-range":
            return demo_range(args.days)
        if args.command == "spark-server":
            return spark_server(args.master, args.port)
        print(settings_table_markdown())
        return 0
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
