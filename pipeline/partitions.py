"""The one daily partitioning every asset shares, and the lookback window mapping."""

from __future__ import annotations

import datetime as dt

from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    TimeWindowPartitionMapping,
)


def daily_partitions(start_date: dt.date) -> DailyPartitionsDefinition:
    """UTC days from `start_date` to yesterday (today's partition appears once it has ended)."""
    return DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC")


def lookback_window(lookback_days: int) -> TimeWindowPartitionMapping:
    """Day D depends on days D-N+1 … D upstream; Dagster clips it at the first partition."""
    return TimeWindowPartitionMapping(start_offset=-(lookback_days - 1), end_offset=0)


def days_in_run(context: AssetExecutionContext) -> list[dt.date]:
    """The days a run materializes: one for a daily run, several for a single-run backfill."""
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    return [first + dt.timedelta(days=i) for i in range((end - first).days)]
