"""Detect: per-pair daily summaries and the beaconing candidates over the lookback window.
Dagster glue in `assets.py`; the Spark jobs are `pair_daily_stats` and `beaconing_candidates`,
the scoring maths `scoring` (readable) and `batch_scoring` (what the job runs)."""
